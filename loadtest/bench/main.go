// Command bench is `make bench`: it measures linkgate against baselines
// started in the same run on the same machine, over loopback only, and
// writes one Markdown report (bench/results.md).
//
// It builds linkgate and the minimal Fiber baseline (loadtest/baseline),
// starts a private redis-server, a fresh PostgreSQL database (dropped at the
// end), nginx and every linkgate configuration on free 127.0.0.1 ports, seeds
// the same random codes into every target, and drives each target with wrk
// for a fixed time over codes picked at random, interleaving the targets for
// several rounds. Then it measures creates per second (SQLite and
// PostgreSQL), the work budget (the baseline again with 1 to 8 µs of pure
// CPU added per request: how much work a ratio goal leaves room for), a
// cold-cache run (every code read once), resident memory with 100,000 and
// 1,000,000 links in the LRU, and runs the Go micro-benchmarks
// into bench/go-bench.txt.
//
// Every process it starts runs in its own process group and is stopped by its
// PID at the end, on error, and on Ctrl-C; each step is bounded in time.
//
//	go run ./loadtest/bench -h
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	Duration       time.Duration
	Warmup         time.Duration
	Settle         time.Duration
	Rounds         int
	Connections    int
	Threads        int
	WrkBatch       bool
	Codes          int
	CreateDuration time.Duration
	MemLinks       []int
	MemTimeout     time.Duration
	Logs           string
	Out            string
	GoBenchOut     string
	GoBenchCount   int
	GoBenchTime    string
	Go             string
	PostgresURL    string
	Keep           bool
	Timeout        time.Duration
	Phases         map[string]bool
}

// allPhases are the parts of a run, in the order they run.
var allPhases = []string{"redirects", "creates", "budget", "cold", "memory", "gobench"}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Duration, "duration", 6*time.Second, "wrk run per target per round (whole seconds)")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "wrk warm-up per target before the first round (0 skips)")
	fs.DurationVar(&o.Settle, "settle", time.Second, "pause after each run (click flushes finish)")
	fs.IntVar(&o.Rounds, "rounds", 4, "rounds; each round runs every target once, in a rotated order")
	fs.IntVar(&o.Connections, "connections", 64, "wrk connections")
	fs.IntVar(&o.Threads, "threads", 2, "wrk threads")
	fs.BoolVar(&o.WrkBatch, "wrk-batch", false, "diagnostic: run wrk under SCHED_BATCH (chrt -b 0), so that its wakeups do not preempt the servers; shows how much of each ratio is the sharing of the cores. Goals are not judged in such a run")
	fs.IntVar(&o.Codes, "codes", 10000, "codes seeded into every target and requested at random")
	fs.DurationVar(&o.CreateDuration, "create-duration", 3*time.Second, "wrk create run per store per round")
	mem := fs.String("memory-links", "100000,1000000", "comma-separated LRU sizes to measure resident memory at")
	fs.DurationVar(&o.MemTimeout, "memory-timeout", 4*time.Minute, "bound on resolving the memory links")
	fs.StringVar(&o.Logs, "logs", "file", "where linkgate and nginx stdout (access logs) go: file (a temp file, truncated after each run) or null (/dev/null)")
	fs.StringVar(&o.Out, "out", "bench/results.md", "Markdown report")
	fs.StringVar(&o.GoBenchOut, "go-bench-out", "bench/go-bench.txt", "go test -bench output (benchstat input)")
	fs.IntVar(&o.GoBenchCount, "go-bench-count", 5, "go test -count for the micro-benchmarks")
	fs.StringVar(&o.GoBenchTime, "go-bench-time", "300ms", "go test -benchtime for the micro-benchmarks (empty: go's default, 1s, which takes about 4 minutes here)")
	fs.StringVar(&o.Go, "go", "go", "go command")
	fs.StringVar(&o.PostgresURL, "postgres", firstNonEmpty(os.Getenv("LINKGATE_BENCH_POSTGRES_URL"), os.Getenv("LINKGATE_TEST_POSTGRES_URL"),
		"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL server to create the benchmark database in (env LINKGATE_BENCH_POSTGRES_URL, then LINKGATE_TEST_POSTGRES_URL)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary directory (logs, configs, databases)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "bound on the whole run")
	phases := fs.String("phases", strings.Join(allPhases, ","), "comma-separated parts to run: "+strings.Join(allPhases, ", "))
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*mem, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-memory-links: %q is not a positive count", s)
		}
		o.MemLinks = append(o.MemLinks, n)
	}
	o.Phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(allPhases, p) {
			return o, fmt.Errorf("-phases: unknown phase %q (have %s)", p, strings.Join(allPhases, ", "))
		}
		o.Phases[p] = true
	}
	switch {
	case len(o.Phases) == 0:
		return o, errors.New("-phases: name at least one")
	case o.Duration < time.Second:
		return o, errors.New("-duration: at least 1s")
	case o.Rounds < 1:
		return o, errors.New("-rounds: at least 1")
	case o.Connections < 1 || o.Threads < 1 || o.Threads > o.Connections:
		return o, errors.New("-connections and -threads: at least 1 thread, no more threads than connections")
	case o.Codes < 100:
		return o, errors.New("-codes: at least 100")
	case o.Logs != "file" && o.Logs != "null":
		return o, errors.New("-logs: file or null")
	case o.CreateDuration < time.Second:
		return o, errors.New("-create-duration: at least 1s")
	}
	return o, nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	h, err := newHarness(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer h.close()
	rep, err := h.runAll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stopped (%v); every process started was stopped: %w", ctx.Err(), err)
		}
		return err
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if err := writeFile(h.path(o.Out), md); err != nil {
		return err
	}
	h.logf("report written to %s", o.Out)
	return nil
}
