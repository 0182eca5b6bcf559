package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// roundLine is the harness's log line of one wrk run: target and failed requests.
var roundLine = regexp.MustCompile(`round \d+/\d+ (\S+) .* errors (\d+)`)

// `make bench` works on this machine from start to end, shrunk to about 40 s
// (2 minutes when linkgate and the baseline are built cold): every phase runs,
// every target answers without a failed request, and the report and the Go
// benchmark output hold what issue 7 asks for. It judges no number: one
// 1-second round says nothing about ratios (make bench does that).
func TestMakeBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole harness (40 s to 2 minutes)")
	}
	testenv.Tool(t, "wrk", "wrk")
	testenv.Tool(t, "nginx", "nginx")
	testenv.Tool(t, "redis-server", "redis-server")
	pg := testenv.PostgresURL(t)

	dir := t.TempDir()
	out, goOut := filepath.Join(dir, "results.md"), filepath.Join(dir, "go-bench.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{
		"-duration", "1s", "-warmup", "0s", "-settle", "0s", "-rounds", "1", "-codes", "200",
		"-create-duration", "1s", "-memory-links", "2000", "-go-bench-count", "1", "-go-bench-time", "1x",
		"-postgres", pg, "-out", out, "-go-bench-out", goOut,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	report, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(report, stdout.Bytes()) {
		t.Error("the report written differs from the one printed")
	}
	for _, section := range []string{"## Redirects", "## Creates", "## Work budget", "## Cold cache", "## Memory"} {
		if !bytes.Contains(report, []byte("\n"+section+"\n")) {
			t.Errorf("report lacks %q", section)
		}
	}
	// Every wrk run logs "round i/n <target> ... errors <n>": each target of
	// every phase ran, and none had a failed request.
	ran := map[string]int{}
	for _, m := range roundLine.FindAllStringSubmatch(stderr.String(), -1) {
		ran[m[1]]++
		if m[2] != "0" {
			t.Errorf("%s: %s failed requests, want 0", m[1], m[2])
		}
	}
	for _, target := range []string{"nginx-return", "baseline", "baseline-metrics", "nginx-baseline", "lg-embedded", "lg-prod",
		"lg-prod-nolimit", "lg-edge", "create-sqlite", "create-pg", "work-0s", "work-1µs", "work-8µs"} {
		if ran[target] != 1 {
			t.Errorf("%s ran %d times, want once", target, ran[target])
		}
	}

	goBench, err := os.ReadFile(goOut)
	if err != nil {
		t.Fatal(err)
	}
	// Issue 7's hot functions: resolve on an L1 hit, a limiter decision, code
	// generation, URL validation; and the whole stack.
	for _, b := range []string{"BenchmarkResolveL1Hit", "BenchmarkLocalAllow", "BenchmarkDecision",
		"BenchmarkNewCode", "BenchmarkNormalize/ascii", "BenchmarkStack/target=embedded", "BenchmarkStack/target=baseline-metrics"} {
		if !bytes.Contains(goBench, []byte("\n"+b)) {
			t.Errorf("go-bench output lacks %s", b)
		}
	}
	if bytes.Contains(goBench, []byte("\nFAIL")) || bytes.Contains(goBench, []byte("\n--- FAIL")) {
		t.Errorf("a Go benchmark failed:\n%s", goBench)
	}
}
