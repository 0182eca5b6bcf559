package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// k6Version is the k6 release the scripts in loadtest/k6 are checked with;
// loadtest/README.md tells users to install the same one.
const k6Version = "v1.8.1"

// k6Binary builds k6 (go install go.k6.io/k6@k6Version) into the user's cache
// directory once per machine and returns its path. A build that fails (no
// module proxy) makes the test unavailable: a failure under CI=true.
func k6Binary(t *testing.T) string {
	t.Helper()
	goTool := testenv.Tool(t, "go", "golang")
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("user cache dir: %v", err)
	}
	dir := filepath.Join(cache, "linkgate-test", "k6-"+k6Version)
	bin := filepath.Join(dir, "k6")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatalf("k6 build dir: %v", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "k6-build-")
	if err != nil {
		t.Fatalf("k6 build dir: %v", err)
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	cmd := exec.Command(goTool, "install", "go.k6.io/k6@"+k6Version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.Unavailable(t, "go install go.k6.io/k6@%s: %v\n%s", k6Version, err, out)
	}
	t.Logf("built k6 %s in %v", k6Version, time.Since(start).Round(time.Second))
	// Into place with one rename, so that a concurrent or interrupted build
	// never leaves a half-written binary where the next run looks.
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		if _, statErr := os.Stat(bin); statErr != nil {
			t.Fatalf("move k6 into %s: %v", dir, err)
		}
	}
	return bin
}

// k6Summary is the part of k6's --summary-export file the tests read.
type k6Summary struct {
	RootGroup struct {
		Checks map[string]struct {
			Passes int `json:"passes"`
			Fails  int `json:"fails"`
		} `json:"checks"`
	} `json:"root_group"`
	Metrics map[string]map[string]any `json:"metrics"`
}

// k6Run runs one of loadtest/k6's scripts with -e settings and returns its
// exit code, its output and its summary (nil when it wrote none).
func k6Run(t *testing.T, k6, script string, settings ...string) (int, string, *k6Summary) {
	t.Helper()
	export := filepath.Join(t.TempDir(), "summary.json")
	args := []string{"run", "--quiet", "--no-color", "--summary-export", export}
	for _, s := range settings {
		args = append(args, "-e", s)
	}
	cmd := exec.Command(k6, append(args, script)...)
	cmd.Dir = filepath.Join("..", "..", "loadtest", "k6")
	cmd.Env = append(os.Environ(), "K6_NO_USAGE_REPORT=true")
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("k6 run %s: %v\n%s", script, err, out)
		}
		code = exit.ExitCode()
	}
	b, err := os.ReadFile(export)
	if err != nil {
		return code, string(out), nil
	}
	var sum k6Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatalf("k6 summary of %s: %v", script, err)
	}
	return code, string(out), &sum
}

// count reads a counter's count (http_reqs, ratelimited...) from a summary.
func (s *k6Summary) count(metric string) float64 {
	n, _ := s.Metrics[metric]["count"].(float64)
	return n
}

// The k6 scripts users point at their deployment run against a real linkgate:
// every check passes and k6 exits 0 at modest load; a crossed threshold makes
// k6 exit 99 (so the thresholds are wired, not decorative); and seeding waits
// out linkgate's 429s as Retry-After says. The latency thresholds are raised
// here because this machine runs the other tests alongside: the runs check
// the scripts, not the service's speed (make bench does that).
func TestK6Scripts(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "loadtest", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "go install go.k6.io/k6@"+k6Version) {
		t.Errorf("loadtest/README.md does not tell users to install k6 %s, the version the scripts are checked with", k6Version)
	}
	k6 := k6Binary(t)
	s := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "k6.db"))
	base := "BASE_URL=" + s.URL

	t.Run("redirect_rate", func(t *testing.T) {
		code, out, sum := k6Run(t, k6, "redirect_rate.js", base, "RATE=100", "DURATION=3s", "SEED=10",
			"PRE_VUS=10", "MAX_VUS=50", "P95_MS=1000", "P99_MS=2000")
		if code != 0 || sum == nil {
			t.Fatalf("k6 exited %d (summary written: %t):\n%s", code, sum != nil, out)
		}
		c := sum.RootGroup.Checks["3xx with Location"]
		// 300 planned arrivals; k6 may start one more or fewer at the edges.
		if c.Fails != 0 || c.Passes < 290 {
			t.Errorf("check '3xx with Location': %d passed, %d failed; want about 300 passed, none failed", c.Passes, c.Fails)
		}
		if n := sum.count("http_reqs"); n < 300 {
			t.Errorf("http_reqs %v, want the 10 seeding creates and about 300 redirects", n)
		}
	})

	t.Run("threshold crossed", func(t *testing.T) {
		code, out, _ := k6Run(t, k6, "redirect_rate.js", base, "RATE=20", "DURATION=1s", "SEED=2", "P95_MS=0")
		if code != 99 || !strings.Contains(out, "thresholds on metrics 'http_req_duration' have been crossed") {
			t.Errorf("with P95_MS=0 k6 exited %d, want 99 (thresholds crossed):\n%s", code, out)
		}
	})

	t.Run("ramp", func(t *testing.T) {
		// SCALE 0.002: 5, 10 and 15 users instead of 2,500, 5,000 and 7,500.
		code, out, sum := k6Run(t, k6, "ramp.js", base, "SCALE=0.002", "RAMP=1s", "HOLD=1s", "SEED=10",
			"THINK_MIN=0.05", "THINK_MAX=0.1", "P95_REDIRECT_MS=1000", "P99_REDIRECT_MS=2000",
			"P95_CREATE_MS=2000", "P95_READ_MS=1000")
		if code != 0 || sum == nil {
			t.Fatalf("k6 exited %d (summary written: %t):\n%s", code, sum != nil, out)
		}
		for _, name := range []string{"redirect: 3xx with Location", "create: 201 with code", "read: 200 with url"} {
			if c := sum.RootGroup.Checks[name]; c.Passes == 0 || c.Fails != 0 {
				t.Errorf("check %q: %d passed, %d failed; want some passed, none failed", name, c.Passes, c.Fails)
			}
		}
	})

	t.Run("seeding waits out 429", func(t *testing.T) {
		// Creates limited to 4 at once, then 4 a second: seeding 10 links
		// meets 429s and must wait them out instead of failing.
		limited := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "k6-limited.db"),
			"LINKGATE_RATELIMIT_CREATE=4/1s:4")
		code, out, sum := k6Run(t, k6, "redirect_rate.js", "BASE_URL="+limited.URL, "RATE=20", "DURATION=1s",
			"SEED=10", "P95_MS=1000", "P99_MS=2000")
		if code != 0 || sum == nil {
			t.Fatalf("k6 exited %d (summary written: %t):\n%s", code, sum != nil, out)
		}
		// One request per iteration (the redirect); the rest seeded.
		if seeding := sum.count("http_reqs") - sum.count("iterations"); seeding <= 10 {
			t.Errorf("seeding sent %v requests: want the 10 creates and at least one answered 429", seeding)
		}
		if c := sum.RootGroup.Checks["3xx with Location"]; c.Fails != 0 || c.Passes == 0 {
			t.Errorf("check '3xx with Location': %d passed, %d failed", c.Passes, c.Fails)
		}
	})
}
