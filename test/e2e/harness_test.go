// Package e2e drives the built linkgate binary over HTTP, with real SQLite
// files, PostgreSQL and Redis. Every process is started on a free loopback
// port and stopped by PID.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// binary is the linkgate executable built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linkgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "linkgate")
	build := exec.Command("go", "build", "-o", binary, "github.com/linkgate/linkgate/cmd/linkgate")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build linkgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// adminKey is the bootstrap admin key every test instance gets.
const adminKey = "e2e-admin-key-0123456789"

// server is one running linkgate process.
type server struct {
	t    *testing.T
	URL  string
	port int
	env  []string
	cmd  *exec.Cmd
	log  *os.File
	done chan error
}

// storeURLs returns the database URLs the per-store tests run against: a
// fresh SQLite file and a fresh PostgreSQL database.
func storeURLs(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "links.db") },
		"postgres": func(t *testing.T) string { return testenv.PostgresURL(t) },
	}
}

// startServer starts linkgate on a free port with the given extra
// environment (KEY=VALUE) and waits until /live answers.
func startServer(t *testing.T, databaseURL string, env ...string) *server {
	t.Helper()
	port := testenv.FreePort(t)
	s := &server{t: t, port: port, URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"LINKGATE_ADDR=127.0.0.1:" + fmt.Sprint(port),
		"LINKGATE_BASE_URL=http://short.test",
		"LINKGATE_DATABASE_URL=" + databaseURL,
		"LINKGATE_ADMIN_KEY=" + adminKey,
		"LINKGATE_SHUTDOWN_DELAY=0s",
		"LINKGATE_LOG_LEVEL=warn",
		// Tests send far more than the default limits allow; the limiter's own
		// tests turn the policies on (a later entry for a name wins).
		"LINKGATE_RATELIMIT_REDIRECT=off",
		"LINKGATE_RATELIMIT_CREATE=off",
		"LINKGATE_RATELIMIT_API=off",
	}, env...)
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *server) start() {
	s.t.Helper()
	logf, err := os.CreateTemp(s.t.TempDir(), "linkgate-*.log")
	if err != nil {
		s.t.Fatal(err)
	}
	s.log = logf
	cmd := exec.Command(binary)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start linkgate: %v", err)
	}
	s.cmd = cmd
	s.done = make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	ok := testenv.Eventually(20*time.Second, func() bool {
		select {
		case err := <-s.done:
			s.done <- err
			return true
		default:
		}
		resp, err := http.Get(s.URL + "/live")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	select {
	case err := <-s.done:
		s.t.Fatalf("linkgate exited at start: %v\n%s", err, s.logs())
	default:
	}
	if !ok {
		s.t.Fatalf("linkgate did not become live\n%s", s.logs())
	}
}

// restart starts the process again on the same port and database.
func (s *server) restart() { s.t.Helper(); s.start() }

func (s *server) logs() string {
	b, _ := os.ReadFile(s.log.Name())
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// kill stops the process with SIGKILL and waits for it; no-op if it exited.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// term sends SIGTERM and waits for the exit; it fails the test unless the
// process exits 0 within timeout.
func (s *server) term(timeout time.Duration) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.cmd = nil
		if err != nil {
			s.t.Fatalf("linkgate exited with %v after SIGTERM\n%s", err, s.logs())
		}
	case <-time.After(timeout):
		s.t.Fatalf("linkgate still running %v after SIGTERM\n%s", timeout, s.logs())
	}
}

// client does not follow redirects, so tests see them.
var client = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %q", err, r.Body)
	}
	return m
}

// do sends a request; header is "Name: value" pairs.
func do(t *testing.T, method, url string, body []byte, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

const jsonCT = "Content-Type: application/json"
const adminAuth = "Authorization: Bearer " + adminKey

// create posts a link and requires a 201; it returns the link JSON.
func (s *server) create(t *testing.T, body string) map[string]any {
	t.Helper()
	r := do(t, "POST", s.URL+"/api/v1/links", []byte(body), jsonCT)
	if r.Status != http.StatusCreated {
		t.Fatalf("create %s: status %d body %s", body, r.Status, r.Body)
	}
	return r.json(t)
}

// snapshot returns every stored link as code → JSON, through the admin API.
func (s *server) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	cursor := ""
	for {
		url := s.URL + "/api/v1/links?limit=500"
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		r := do(t, "GET", url, nil, adminAuth)
		if r.Status != 200 {
			t.Fatalf("list: %d %s", r.Status, r.Body)
		}
		var page struct {
			Links []map[string]any `json:"links"`
			Next  *string          `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatal(err)
		}
		for _, l := range page.Links {
			b, _ := json.Marshal(l)
			out[l["code"].(string)] = string(b)
		}
		if page.Next == nil {
			return out
		}
		cursor = *page.Next
	}
}
