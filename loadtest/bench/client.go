package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// link is one seeded short link.
type link struct {
	Code string
	URL  string
}

// newHostClient is a keep-alive client for one loopback server.
func newHostClient(addr string, conns int) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                     addr,
		MaxConns:                 conns,
		ReadTimeout:              10 * time.Second,
		WriteTimeout:             10 * time.Second,
		MaxIdleConnDuration:      time.Minute,
		NoDefaultUserAgentHeader: true,
	}
}

// forEach runs fn(i) for i in [0, n) on workers goroutines until all are
// done, ctx ends, or deadline passes; it returns how many ran.
func forEach(ctx context.Context, n, workers int, deadline time.Time, fn func(worker, i int) error) (int, error) {
	var next atomic.Int64
	var ran atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				if time.Now().After(deadline) {
					return
				}
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(w, i); err != nil {
					once.Do(func() { firstErr = err; close(stop) })
					return
				}
				ran.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return int(ran.Load()), firstErr
}

// seedLinks creates every link through linkgate's API with its code as a
// custom alias, so every target serves the same codes.
func seedLinks(ctx context.Context, addr string, ls []link, workers int, timeout time.Duration) error {
	c := newHostClient(addr, workers)
	type body struct {
		URL  string `json:"url"`
		Code string `json:"code"`
	}
	n, err := forEach(ctx, len(ls), workers, time.Now().Add(timeout), func(_, i int) error {
		b, err := json.Marshal(body{URL: ls[i].URL, Code: ls[i].Code})
		if err != nil {
			return err
		}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/api/v1/links")
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/json")
		req.SetBody(b)
		if err := c.Do(req, resp); err != nil {
			return fmt.Errorf("seed %s: %w", ls[i].Code, err)
		}
		if resp.StatusCode() != fasthttp.StatusCreated {
			return fmt.Errorf("seed %s: status %d: %s", ls[i].Code, resp.StatusCode(), resp.Body())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("seed %s: %w", addr, err)
	}
	if n != len(ls) {
		return fmt.Errorf("seed %s: %d of %d links within %v", addr, n, len(ls), timeout)
	}
	return nil
}

// checkRedirects GETs a sample of the links and requires 302 with the
// link's URL as Location.
func checkRedirects(addr string, ls []link, sample int) error {
	c := newHostClient(addr, 1)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	step := max(1, len(ls)/sample)
	for i := 0; i < len(ls); i += step {
		req.SetRequestURI("http://" + addr + "/" + ls[i].Code)
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			return fmt.Errorf("check %s/%s: %w", addr, ls[i].Code, err)
		}
		if resp.StatusCode() != fasthttp.StatusFound {
			return fmt.Errorf("check %s/%s: status %d, want 302", addr, ls[i].Code, resp.StatusCode())
		}
		if loc := string(resp.Header.Peek("Location")); ls[i].URL != "" && loc != ls[i].URL {
			return fmt.Errorf("check %s/%s: Location %q, want %q", addr, ls[i].Code, loc, ls[i].URL)
		}
	}
	return nil
}

// resolveStats is the outcome of reading a list of codes once each.
type resolveStats struct {
	Done     int           // requests answered 302
	Elapsed  time.Duration // wall time
	P50, P99 time.Duration
}

// RPS is answered requests per second.
func (s resolveStats) RPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Done) / s.Elapsed.Seconds()
}

// resolveAll GETs /code for each code exactly once on conns connections,
// requiring 302, and returns the rate and latency percentiles. It stops at
// the deadline; Done then says how far it got.
func resolveAll(ctx context.Context, addr string, codes []string, conns int, deadline time.Time) (resolveStats, error) {
	c := newHostClient(addr, conns)
	lat := make([]time.Duration, len(codes))
	start := time.Now()
	n, err := forEach(ctx, len(codes), conns, deadline, func(_, i int) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/" + codes[i])
		t0 := time.Now()
		if err := c.Do(req, resp); err != nil {
			return fmt.Errorf("GET /%s: %w", codes[i], err)
		}
		lat[i] = time.Since(t0)
		if resp.StatusCode() != fasthttp.StatusFound {
			return fmt.Errorf("GET /%s: status %d, want 302", codes[i], resp.StatusCode())
		}
		return nil
	})
	s := resolveStats{Done: n, Elapsed: time.Since(start)}
	if err != nil {
		return s, fmt.Errorf("resolve on %s: %w", addr, err)
	}
	got := slices.DeleteFunc(lat, func(d time.Duration) bool { return d == 0 })
	slices.Sort(got)
	s.P50, s.P99 = percentile(got, 50), percentile(got, 99)
	return s, nil
}

// hammer sends GET path on conns connections for d (warming connection
// buffers and the runtime without touching the link cache).
func hammer(ctx context.Context, addr, path string, conns int, d time.Duration) error {
	c := newHostClient(addr, conns)
	_, err := forEach(ctx, 1<<62, conns, time.Now().Add(d), func(_, _ int) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + path)
		if err := c.Do(req, resp); err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		return nil
	})
	return err
}

// getBody GETs url and returns the body of a 200 answer.
func getBody(url string) (string, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, resp.StatusCode())
	}
	return string(resp.Body()), nil
}

// metricSum adds the values of every sample of metric name whose labels
// include all of want (`k="v"` pairs), in Prometheus text exposition. It
// reports false when no sample matched.
func metricSum(exposition, name string, want ...string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		labels := ""
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "} ")
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // a longer metric name
		}
		ok := true
		for _, w := range want {
			if !strings.Contains(","+labels+",", ","+w+",") {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(strings.TrimSpace(rest), &v); err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}
