// Command baseline serves the smallest Fiber v2 app that does linkgate's job
// (package mapserver): GET /:code answers 302 with the Location read from an
// in-memory Go map, and unknown codes answer 404. It has no store, cache,
// limiter or logs, and no metrics unless asked (-metrics), so `make bench`
// can put linkgate's numbers beside what Fiber itself does on the same
// machine in the same run.
//
// The map comes from a file of "code<TAB>url" lines (-codes), as written by the
// benchmark harness (loadtest/bench), or, without -codes, from -n codes
// generated deterministically from -seed.
//
//	go run ./loadtest/baseline -addr 127.0.0.1:9000 -codes codes.tsv
//
// -work adds that much pure CPU to every request, the measuring stick of the
// benchmark's budget phase; -metrics adds linkgate's HTTP metrics
// (fiberprometheus, on a registry of its own that nothing serves): what the
// metrics library costs by itself. See mapserver.Options.
//
// It stops on SIGINT or SIGTERM.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/loadtest/baseline/mapserver"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9000", "listen address (loopback only in benchmarks)")
	codesPath := fs.String("codes", "", `file of "code<TAB>url" lines; empty generates -n codes`)
	n := fs.Int("n", 10000, "codes to generate when -codes is empty")
	seed := fs.Uint64("seed", 1, "seed of the generated codes")
	work := fs.Duration("work", 0, "CPU work to add to every request (the budget phase of make bench); 0: none")
	metrics := fs.Bool("metrics", false, "add linkgate's HTTP metrics middleware (fiberprometheus)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	var urls map[string]string
	var err error
	if *codesPath != "" {
		urls, err = readCodes(*codesPath)
	} else {
		urls, err = generate(*n, *seed)
	}
	if err != nil {
		return err
	}

	o := mapserver.Options{Work: *work}
	if *metrics {
		o.Metrics = prometheus.NewRegistry()
	}
	app, err := mapserver.NewWith(urls, o)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- app.Listen(*addr) }()
	fmt.Fprintf(stderr, "baseline: %d codes, listening on %s\n", len(urls), *addr)
	select {
	case err := <-errc:
		return fmt.Errorf("listen on %s: %w", *addr, err)
	case <-ctx.Done():
	}
	return app.ShutdownWithTimeout(5 * time.Second)
}

// readCodes reads "code<TAB>url" lines; blank lines are skipped.
func readCodes(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read codes: %w", err)
	}
	defer f.Close()
	urls := make(map[string]string)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 64*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		code, url, ok := strings.Cut(text, "\t")
		if !ok || code == "" || url == "" {
			return nil, fmt.Errorf("read codes: %s:%d: want code<TAB>url", path, line)
		}
		urls[code] = url
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read codes: %w", err)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("read codes: %s holds no codes", path)
	}
	return urls, nil
}

// generate makes n distinct 7-character base62 codes, each mapped to its own
// URL.
func generate(n int, seed uint64) (map[string]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("-n %d: want at least 1", n)
	}
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	urls := make(map[string]string, n)
	var b [7]byte
	for len(urls) < n {
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		urls[string(b[:])] = fmt.Sprintf("https://example.com/baseline/%d", len(urls))
	}
	return urls, nil
}
