package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// This file holds the helpers of the edge tests (edge_*_test.go): a real
// nginx running the shipped deploy/nginx/nginx.conf in front of several
// linkgate processes, clients bound to chosen loopback source addresses, and
// readers for the JSON logs of nginx and linkgate.

// edgeConfigPath is the shipped nginx configuration, relative to this package.
const edgeConfigPath = "../../deploy/nginx/nginx.conf"

// edgeEnv is the environment every linkgate behind the test nginx gets: nginx
// (on 127.0.0.1) is the trusted proxy, the shutdown delay is the shipped 5 s
// (above nginx.conf's 3 s upstream keepalive_timeout, so nginx has closed its
// idle connections to an instance before the instance closes them), and
// access logs are on so tests can find requests by ID. linkgate's own limiter
// is off here: all test traffic comes from a few loopback addresses, and
// these tests are about the edge, not the policies.
var edgeEnv = []string{
	"LINKGATE_TRUSTED_PROXIES=127.0.0.1/32",
	"LINKGATE_SHUTDOWN_DELAY=5s",
	"LINKGATE_DRAIN_TIMEOUT=5s",
	"LINKGATE_LOG_LEVEL=info",
	"LINKGATE_RATELIMIT_REDIRECT=off",
	"LINKGATE_RATELIMIT_CREATE=off",
	"LINKGATE_RATELIMIT_API=off",
}

// edgeMarkers are the substitution markers of nginx.conf and how many lines
// carry each (-1: at least one). A drifted config fails here, loudly.
var edgeMarkers = map[string]int{
	"# e2e:listen":        1,
	"# e2e:status-listen": 1,
	"# e2e:upstream":      -1,
	"# e2e:path":          6,
}

var edgeUpstreamAddr = regexp.MustCompile(`\bapp[0-9]+:8080\b`)

// edgeRenderConfig applies the documented substitutions to the shipped
// config: listen ports, upstream servers (the first marked line is repeated
// once per address, with its parameters; other marked lines are dropped), and
// file paths under dir. Nothing else changes.
func edgeRenderConfig(conf string, port, statusPort int, upstreams []string, dir string) (string, error) {
	var out strings.Builder
	seen := map[string]int{}
	for _, line := range strings.SplitAfter(conf, "\n") {
		marker := ""
		for m := range edgeMarkers {
			if strings.HasSuffix(strings.TrimRight(line, "\n"), m) {
				marker = m
			}
		}
		seen[marker]++
		switch marker {
		case "":
			out.WriteString(line)
		case "# e2e:listen":
			if !strings.Contains(line, "listen 80;") {
				return "", fmt.Errorf("listen marker on a line without `listen 80;`: %q", line)
			}
			out.WriteString(strings.Replace(line, "listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port), 1))
		case "# e2e:status-listen":
			if !strings.Contains(line, "listen 8081;") {
				return "", fmt.Errorf("status-listen marker on a line without `listen 8081;`: %q", line)
			}
			out.WriteString(strings.Replace(line, "listen 8081;", fmt.Sprintf("listen 127.0.0.1:%d;", statusPort), 1))
		case "# e2e:upstream":
			if !edgeUpstreamAddr.MatchString(line) {
				return "", fmt.Errorf("upstream marker on a line without appN:8080: %q", line)
			}
			if seen[marker] > 1 {
				continue
			}
			for _, addr := range upstreams {
				out.WriteString(edgeUpstreamAddr.ReplaceAllLiteralString(line, addr))
			}
		case "# e2e:path":
			n := strings.NewReplacer("/var/run/", dir+"/", "/var/cache/nginx/", dir+"/").Replace(line)
			if n == line {
				return "", fmt.Errorf("path marker on a line without /var/run/ or /var/cache/nginx/: %q", line)
			}
			out.WriteString(n)
		}
	}
	for m, want := range edgeMarkers {
		if got := seen[m]; (want < 0 && got == 0) || (want >= 0 && got != want) {
			return "", fmt.Errorf("marker %q on %d lines, want %d", m, got, want)
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.Contains(code, "/var/") {
			return "", fmt.Errorf("unsubstituted system path (add a # e2e:path marker): %q", line)
		}
	}
	return out.String(), nil
}

// edgeNginx is one nginx master process (and its workers, in their own
// process group) serving the shipped config.
type edgeNginx struct {
	t         *testing.T
	URL       string // public listener, http://127.0.0.1:port
	StatusURL string // stub_status listener
	port      int
	dir       string
	cmd       *exec.Cmd
	done      chan error
}

// startEdgeNginx renders the shipped config for the given upstream addresses
// (host:port), checks it with nginx -t, starts nginx in the foreground and
// waits until both listeners accept. It is stopped at cleanup.
func startEdgeNginx(t *testing.T, upstreams ...string) *edgeNginx {
	t.Helper()
	bin := testenv.Tool(t, "nginx", "nginx")
	conf, err := os.ReadFile(edgeConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parents are 0700 and nginx workers drop privileges
	// when the test runs as root.
	dir, err := os.MkdirTemp("", "lgtest-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &edgeNginx{t: t, dir: dir, port: testenv.FreePort(t)}
	statusPort := testenv.FreePort(t)
	n.URL = fmt.Sprintf("http://127.0.0.1:%d", n.port)
	n.StatusURL = fmt.Sprintf("http://127.0.0.1:%d", statusPort)
	rendered, err := edgeRenderConfig(string(conf), n.port, statusPort, upstreams, dir)
	if err != nil {
		t.Fatalf("render %s: %v", edgeConfigPath, err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-q", "-p", dir+"/", "-c", confPath).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	stdout, err := os.Create(filepath.Join(dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir+"/", "-c", confPath, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	stdout.Close()
	stderr.Close()
	n.cmd = cmd
	n.done = make(chan error, 1)
	go func() { n.done <- cmd.Wait() }()
	t.Cleanup(n.stop)
	ok := testenv.Eventually(10*time.Second, func() bool {
		select {
		case err := <-n.done:
			n.done <- err
			return true
		default:
		}
		return edgeDialable(fmt.Sprintf("127.0.0.1:%d", n.port)) && edgeDialable(fmt.Sprintf("127.0.0.1:%d", statusPort))
	})
	select {
	case err := <-n.done:
		n.done <- err
		t.Fatalf("nginx exited at start: %v\n%s", err, n.errorLog())
	default:
	}
	if !ok {
		t.Fatalf("nginx did not listen\n%s", n.errorLog())
	}
	return n
}

func edgeDialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stop ends nginx: SIGTERM to the master (fast shutdown, it stops its
// workers), then SIGKILL to its process group if it lingers.
func (n *edgeNginx) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
	n.cmd = nil
}

func (n *edgeNginx) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	if len(b) > 60000 {
		b = b[len(b)-60000:]
	}
	return string(b)
}

// accessLog returns nginx's JSON access log lines, parsed; every line must be
// a JSON object (the log_format's escape=json promise).
func (n *edgeNginx) accessLog(t *testing.T) []map[string]any {
	t.Helper()
	return edgeJSONLines(t, filepath.Join(n.dir, "access.log"), true)
}

// logLine returns nginx's access-log line for a request ID, waiting a little:
// nginx writes it after the response is sent. Nil if none appears.
func (n *edgeNginx) logLine(t *testing.T, id string) map[string]any {
	t.Helper()
	var found map[string]any
	testenv.Eventually(3*time.Second, func() bool {
		for _, l := range n.accessLog(t) {
			if l["request_id"] == id {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// edgeJSONLines parses a file of JSON lines; non-JSON lines fail the test when
// strict, and are skipped otherwise.
func edgeJSONLines(t *testing.T, path string, strict bool) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			if strict {
				t.Fatalf("%s: line is not JSON: %v: %q", path, err, sc.Text())
			}
			continue
		}
		out = append(out, m)
	}
	return out
}

// edgeAppLog returns the JSON lines of a linkgate instance's current log.
func edgeAppLog(t *testing.T, s *server) []map[string]any {
	t.Helper()
	return edgeJSONLines(t, s.log.Name(), false)
}

// edgeAppLogLine returns the last line of s's log with the given message, or
// nil.
func edgeAppLogLine(t *testing.T, s *server, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, l := range edgeAppLog(t, s) {
		if l["msg"] == msg {
			found = l
		}
	}
	return found
}

// edgeFindRequest returns the access-log line with the given request ID from
// any of the instances, waiting a little for it to be written.
func edgeFindRequest(t *testing.T, id string, apps ...*server) map[string]any {
	t.Helper()
	var found map[string]any
	testenv.Eventually(3*time.Second, func() bool {
		for _, s := range apps {
			for _, l := range edgeAppLog(t, s) {
				if l["msg"] == "request" && l["request_id"] == id {
					found = l
					return true
				}
			}
		}
		return false
	})
	if found == nil {
		t.Fatalf("no linkgate access-log line with request_id %q", id)
	}
	return found
}

// edgeCluster is nginx in front of n linkgate instances sharing one
// PostgreSQL database.
type edgeCluster struct {
	nginx *edgeNginx
	apps  []*server
	db    string
}

// startEdgeCluster starts n instances (sequentially: the first one migrates
// the database) with edgeEnv plus env, and nginx in front of them.
func startEdgeCluster(t *testing.T, n int, env ...string) *edgeCluster {
	t.Helper()
	c := &edgeCluster{db: testenv.PostgresURL(t)}
	var addrs []string
	for i := 0; i < n; i++ {
		s := startServer(t, c.db, append(append([]string{}, edgeEnv...), env...)...)
		c.apps = append(c.apps, s)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", s.port))
	}
	c.nginx = startEdgeNginx(t, addrs...)
	return c
}

// edgeClient returns a keep-alive client that does not follow redirects, does
// not decompress, and dials from the given loopback source address (Linux
// routes all of 127.0.0.0/8 to lo), so that nginx sees distinct client IPs.
func edgeClient(sourceIP string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if sourceIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(sourceIP)}
	}
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// edgeDo is do with a given client; it returns the error instead of failing,
// so it can run on load-generator goroutines.
func edgeDo(c *http.Client, method, url string, body []byte, header ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body: %w", err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// edgeMustDo is edgeDo that fails the test on a transport error.
func edgeMustDo(t *testing.T, c *http.Client, method, url string, body []byte, header ...string) response {
	t.Helper()
	r, err := edgeDo(c, method, url, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// edgeSignal sends SIGTERM to a linkgate instance and returns when it was sent.
func edgeSignal(t *testing.T, s *server) time.Time {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// edgeWaitExit waits for an instance that was sent SIGTERM at sent and
// returns how long after that it exited; it fails unless the exit is 0 within
// timeout.
func edgeWaitExit(t *testing.T, s *server, sent time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	select {
	case err := <-s.done:
		took := time.Since(sent)
		s.cmd = nil
		if err != nil {
			t.Fatalf("linkgate exited with %v after SIGTERM\n%s", err, s.logs())
		}
		return took
	case <-time.After(timeout - time.Since(sent)):
		t.Fatalf("linkgate still running %v after SIGTERM\n%s", timeout, s.logs())
		return 0
	}
}

// edgeProblem checks that r is an application/problem+json body with the
// given status and returns it.
func edgeProblem(t *testing.T, r response, status int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%d: Content-Type %q, want application/problem+json: %s", status, ct, r.Body)
	}
	p := r.json(t)
	if got, _ := p["status"].(float64); int(got) != status {
		t.Fatalf("problem status member %v, want %d: %s", p["status"], status, r.Body)
	}
	if title, _ := p["title"].(string); title == "" {
		t.Fatalf("problem without a title: %s", r.Body)
	}
	return p
}
