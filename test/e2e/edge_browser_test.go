package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/linkgate/linkgate/internal/testenv"
)

// edgeWebDir is the static page, relative to this package.
const edgeWebDir = "../../web"

// edgeBrowser starts a headless Chromium with a fresh profile and returns a
// tab context. At cleanup the browser is closed and every process still using
// its profile directory is killed by PID.
func edgeBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := testenv.Tool(t, "chromium", "chromium")
	profile, err := os.MkdirTemp("", "lgtest-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	var browserCmd *exec.Cmd
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(900, 760),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			browserCmd = cmd
		}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		if browserCmd != nil && browserCmd.Process != nil {
			_ = syscall.Kill(-browserCmd.Process.Pid, syscall.SIGKILL)
		}
		edgeKillProfileUsers(profile)
		os.RemoveAll(profile)
	})
	// Start the browser now, without a deadline (a deadline on the first Run
	// would bound the browser's whole life).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// edgeKillProfileUsers kills, by PID, the processes whose command line names
// the profile directory: Chromium helpers that outlived the browser.
func edgeKillProfileUsers(profile string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte("--user-data-dir="+profile)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// edgePageState is what the page shows.
type edgePageState struct {
	Result     bool   `json:"result"`
	Short      string `json:"short"`
	Error      bool   `json:"error"`
	ErrorTitle string `json:"errorTitle"`
	ErrorText  string `json:"errorText"`
	Quota      string `json:"quota"`
}

const edgeStateJS = `(() => {
  const $ = (id) => document.getElementById(id);
  return {
    result: !$("result").hidden, short: $("short-link").textContent,
    error: !$("error").hidden, errorTitle: $("error-title").textContent, errorText: $("error").textContent.trim(),
    quota: $("quota").hidden ? "" : $("quota").textContent,
  };
})()`

// edgeSubmit fills the form, submits it, and waits for a new outcome.
func edgeSubmit(t *testing.T, ctx context.Context, longURL string) edgePageState {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`document.getElementById("result").hidden = true;
			document.getElementById("error").hidden = true; document.getElementById("url").value = "";`),
		chromedp.SendKeys(chromedp.ID("url"), longURL),
		chromedp.Click(chromedp.ID("submit")),
		chromedp.Poll[chromedp.Void](`!document.getElementById("result").hidden || !document.getElementById("error").hidden`,
			chromedp.WithPollingTimeout(10*time.Second)),
	)
	if err != nil {
		t.Fatalf("submit %s in the page: %v", longURL, err)
	}
	st, err := chromedp.Run(ctx, chromedp.Evaluate[edgePageState](edgeStateJS))
	if err != nil {
		t.Fatalf("read page state: %v", err)
	}
	return st
}

// edgeServeWeb serves web/ on a fresh loopback port: its own origin.
func edgeServeWeb(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(edgeWebDir)))
	t.Cleanup(srv.Close)
	return srv
}

// The page in a real browser, cross-origin: from an allowed origin it creates
// a link that resolves and reads the exposed headers; from a disallowed
// origin the browser's CORS check fails, the page says so, and nothing is
// created.
func TestEdgeBrowser(t *testing.T) {
	ctx := edgeBrowser(t)
	allowed := edgeServeWeb(t)
	denied := edgeServeWeb(t)
	s := startServer(t, "sqlite://"+t.TempDir()+"/browser.db",
		"LINKGATE_CORS_ORIGINS="+allowed.URL,
		// Four creates, then one every 15 minutes: the page's submits can
		// take longer than a fast refill's interval on a loaded machine (at
		// 100/1m a token came back every 0.6 s and the quota never ran out).
		"LINKGATE_RATELIMIT_CREATE=4/1h:4")

	// What the API sends a browser from the allowed origin.
	probe := do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/browser/probe"}`), jsonCT, "Origin: "+allowed.URL)
	if probe.Status != 201 || probe.Header.Get("Access-Control-Allow-Origin") != allowed.URL {
		t.Fatalf("CORS from the allowed origin: %d, Access-Control-Allow-Origin %q", probe.Status, probe.Header.Get("Access-Control-Allow-Origin"))
	}
	exposed := strings.ToLower(probe.Header.Get("Access-Control-Expose-Headers"))
	for _, h := range []string{"ratelimit", "retry-after", "x-request-id"} {
		if !strings.Contains(exposed, h) {
			t.Fatalf("Access-Control-Expose-Headers %q lacks %s: the page could not read it", exposed, h)
		}
	}
	limiterWired := probe.Header.Get("RateLimit") != ""
	if !limiterWired {
		t.Logf("no RateLimit header on a create yet: the page's quota display is not checked (limiter not wired)")
	}

	pageURL := func(origin *httptest.Server) string {
		return origin.URL + "/index.html?api=" + url.QueryEscape(s.URL)
	}

	// First, so that the allowed page has not used up the create quota yet.
	t.Run("disallowed origin", func(t *testing.T) {
		before := s.snapshot(t)
		if err := chromedp.Do(ctx, chromedp.Navigate(pageURL(denied)), chromedp.WaitVisible(chromedp.ID("url"))); err != nil {
			t.Fatal(err)
		}
		st := edgeSubmit(t, ctx, "https://example.com/browser/denied")
		if !st.Error || st.Result || !strings.Contains(st.ErrorTitle, "Could not reach") {
			t.Fatalf("page from a disallowed origin: %+v", st)
		}
		if after := s.snapshot(t); !equalMaps(before, after) {
			t.Fatalf("a request from a disallowed origin created a link: %d links before, %d after", len(before), len(after))
		}
		for _, l := range s.snapshot(t) {
			if strings.Contains(l, "/browser/denied") {
				t.Fatal("the denied link was stored")
			}
		}
	})
	t.Run("allowed origin", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(pageURL(allowed)), chromedp.WaitVisible(chromedp.ID("url"))); err != nil {
			t.Fatal(err)
		}
		target := "https://example.com/browser/made-in-chromium"
		st := edgeSubmit(t, ctx, target)
		if !st.Result || st.Error {
			t.Fatalf("page shows no short link: %+v", st)
		}
		code := st.Short[strings.LastIndex(st.Short, "/")+1:]
		if r := do(t, "GET", s.URL+"/"+code, nil); r.Status != 302 || r.Header.Get("Location") != target {
			t.Fatalf("short link %q from the page: %d %q", st.Short, r.Status, r.Header.Get("Location"))
		}
		if limiterWired && !regexp.MustCompile(`\d+ more links? can be created`).MatchString(st.Quota) {
			t.Fatalf("page does not show the remaining quota from RateLimit: %q", st.Quota)
		}
		t.Logf("page: short link %q, quota %q", st.Short, st.Quota)

		// The copy button works (clipboard, or selection as a fallback).
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("copy")),
			chromedp.Poll[chromedp.Void](`document.getElementById("copied").textContent !== ""`, chromedp.WithPollingTimeout(5*time.Second))); err != nil {
			t.Fatalf("copy button: %v", err)
		}

		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		dir, _ := filepath.Abs("../../test-artifacts")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "web.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", filepath.Join(dir, "web.png"))

		// A problem from the API is shown with its title and detail.
		st = edgeSubmit(t, ctx, "ftp://example.com/file")
		if !st.Error || st.Result || st.ErrorTitle == "" || !strings.Contains(strings.ToLower(st.ErrorText), "http") {
			t.Fatalf("page after an invalid URL: %+v", st)
		}

		// Over the create quota: the 429 message with Retry-After.
		if !limiterWired {
			return
		}
		for i := 0; i < 8; i++ {
			st = edgeSubmit(t, ctx, fmt.Sprintf("https://example.com/browser/quota/%d", i))
			if st.Error {
				break
			}
		}
		if !regexp.MustCompile(`^Too many requests, try again in \d+ s\.$`).MatchString(st.ErrorTitle) {
			t.Fatalf("page over the quota: %+v", st)
		}
		t.Logf("page over the quota: %q", st.ErrorTitle)
	})
}
