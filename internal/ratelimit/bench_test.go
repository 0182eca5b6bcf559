package ratelimit

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/testenv"
)

// benchParallelism × GOMAXPROCS goroutines call the decider at once, like
// the request goroutines of a busy server.
const benchParallelism = 32

// benchPolicy is generous enough that decisions are allowed and keys expire
// within a millisecond, so benchmarks leave nothing behind.
func benchPolicy(b *testing.B) Policy {
	return mustPolicy(b, "redirect", "1000000000/1s:1000")
}

// benchRedis starts a private redis-server, so that its CPU time is the
// benchmark's alone, and returns its URL and a function reading the CPU
// time it has used.
func benchRedis(b *testing.B) (string, func() time.Duration) {
	r := testenv.StartRedis(b)
	admin := newClient(b, r.URL(), time.Second)
	return r.URL(), func() time.Duration {
		info, err := admin.Info(context.Background(), "cpu").Result()
		if err != nil {
			b.Fatalf("INFO cpu: %v", err)
		}
		var total time.Duration
		for line := range strings.SplitSeq(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			if k == "used_cpu_user" || k == "used_cpu_sys" {
				f, _ := strconv.ParseFloat(v, 64)
				total += time.Duration(f * float64(time.Second))
			}
		}
		return total
	}
}

// cpuMeter reports CPU time per operation: this process's (server and
// client) as "cpu-ns/op" and Redis's as "redis-cpu-ns/op". On a shared
// machine these are steadier than ns/op, and their sum over the cores is the
// throughput a dedicated machine would reach.
type cpuMeter struct {
	b          *testing.B
	redisCPU   func() time.Duration
	proc, rdis time.Duration
}

func startCPU(b *testing.B, redisCPU func() time.Duration) *cpuMeter {
	m := &cpuMeter{b: b, redisCPU: redisCPU, proc: processCPU()}
	if redisCPU != nil {
		m.rdis = redisCPU()
	}
	return m
}

func (m *cpuMeter) stop() {
	n := float64(m.b.N)
	m.b.ReportMetric(float64(processCPU()-m.proc)/n, "cpu-ns/op")
	if m.redisCPU != nil {
		m.b.ReportMetric(float64(m.redisCPU()-m.rdis)/n, "redis-cpu-ns/op")
	}
}

// benchDeciders builds the deciders the benchmarks compare, on a private
// Redis.
func benchDeciders(b *testing.B) (map[string]func() Decider, func() time.Duration) {
	url, redisCPU := benchRedis(b)
	prefix := "bench:"
	return map[string]func() Decider{
		"local": func() Decider { return NewLocalLimiter(LocalConfig{}) },
		"redis": func() Decider {
			r, err := NewRedisLimiter(RedisConfig{Client: newClient(b, url, time.Second), Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			return r
		},
		"batched": func() Decider {
			return newTestBatcher(b, BatcherConfig{Client: newClient(b, url, time.Second), Prefix: prefix, Timeout: time.Second})
		},
		"pipelined": func() Decider {
			return newTestBatcher(b, BatcherConfig{Client: newClient(b, url, time.Second), Prefix: prefix, Timeout: time.Second, PerKeyCalls: true})
		},
		"batched+overlimit": func() Decider {
			o, err := NewOverLimitCache(OverLimitConfig{
				Next: newTestBatcher(b, BatcherConfig{Client: newClient(b, url, time.Second), Prefix: prefix, Timeout: time.Second}),
			})
			if err != nil {
				b.Fatal(err)
			}
			return o
		},
		// production is what linkgate runs: over-limit cache, Fallback, Batcher.
		"production": func() Decider {
			// The Fallback's timeout is above the callers' deadlines, as in
			// linkgate (both 50ms), so that it adds no timer of its own.
			d, _ := newProductionStack(b, newClient(b, url, time.Second), prefix, time.Second, FallbackConfig{Timeout: time.Hour})
			return d
		},
		// production+lease is the redirect policy's stack with leases:
		// Leaser, Fallback, Batcher (the Leaser remembers denials itself).
		"production+lease": func() Decider {
			l, _ := newLeaseStack(b, newClient(b, url, time.Second), prefix, time.Second, LeaseConfig{}, FallbackConfig{Timeout: time.Hour})
			return l
		},
	}, redisCPU
}

func benchAllow(b *testing.B, name string) { benchAllowKeys(b, name, false) }

// benchAllowKeys runs decider name in parallel: every goroutine on its own
// key, or all on one key (oneKey).
func benchAllowKeys(b *testing.B, name string, oneKey bool) {
	deciders, redisCPU := benchDeciders(b)
	d := deciders[name]()
	if name == "local" {
		redisCPU = nil
	}
	p := benchPolicy(b)
	var seq atomic.Int64
	var denied, failed atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	cpu := startCPU(b, redisCPU)
	b.RunParallel(func(pb *testing.PB) {
		key := "client-" + strconv.FormatInt(seq.Add(1), 10) // one bucket per goroutine
		if oneKey {
			key = "client"
		}
		// A deadline, as the middleware always sets one (shared, not per call).
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for pb.Next() {
			dec, err := d.Allow(ctx, p, key, 1)
			if err != nil {
				failed.Add(1)
			} else if !dec.Allowed {
				denied.Add(1)
			}
		}
	})
	b.StopTimer()
	cpu.stop()
	if l, ok := d.(*Leaser); ok {
		if n, ok := l.next.(*leaseNext); ok {
			b.ReportMetric(float64(n.calls.Load())/float64(b.N), "calls/op")
		}
	}
	if failed.Load() > 0 || denied.Load() > 0 {
		b.Fatalf("%d errors, %d denied", failed.Load(), denied.Load())
	}
}

// BenchmarkRedisAllow is the naive mode: one EVALSHA round trip per decision.
func BenchmarkRedisAllow(b *testing.B) { benchAllow(b, "redis") }

// BenchmarkBatched is the same script, one call per batch of concurrent
// decisions.
func BenchmarkBatched(b *testing.B) { benchAllow(b, "batched") }

// BenchmarkPipelined is the Batcher's Cluster-safe mode: one call per
// decision, a pipeline per batch.
func BenchmarkPipelined(b *testing.B) { benchAllow(b, "pipelined") }

// BenchmarkProduction is the production stack: over-limit cache, Fallback
// (breaker, timeout), Batcher.
func BenchmarkProduction(b *testing.B) { benchAllow(b, "production") }

// BenchmarkLocalAllow is the in-process bucket.
func BenchmarkLocalAllow(b *testing.B) { benchAllow(b, "local") }

// BenchmarkLeaserAllow is the production stack with leases (Leaser,
// Fallback, Batcher) with every goroutine on its own key, and with all of
// them on one key (leases shared, fetches collapsed).
func BenchmarkLeaserAllow(b *testing.B) {
	b.Run("key per goroutine", func(b *testing.B) { benchAllowKeys(b, "production+lease", false) })
	b.Run("one key", func(b *testing.B) { benchAllowKeys(b, "production+lease", true) })
}

// BenchmarkServer measures what the issue measured: requests per second of
// one Fiber server over loopback TCP, without the limiter (baseline, in the
// same run) and with each decider, every client goroutine its own bucket
// and under its limit. Compare ns/op of each sub-benchmark with baseline's.
func BenchmarkServer(b *testing.B) {
	benchServer(b, benchPolicy(b), []string{"baseline", "local", "redis", "pipelined", "batched", "production", "production+lease"})
}

// BenchmarkServerOverLimit is the same server hammered by clients that are
// over their limit (10 per second each): nearly every response is a 429.
func BenchmarkServerOverLimit(b *testing.B) {
	benchServer(b, mustPolicy(b, "redirect", "10/1s"), []string{"baseline", "batched", "batched+overlimit", "production", "production+lease"})
}

func benchServer(b *testing.B, p Policy, names []string) {
	deciders, redisCPU := benchDeciders(b)
	for _, name := range names {
		b.Run(name, func(b *testing.B) {
			app := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: problemErrorHandler})
			if name != "baseline" {
				mw, err := New(Config{
					Policy: p, Decider: deciders[name](), Timeout: time.Second,
					KeyFunc: func(c *fiber.Ctx) string { return c.Get("X-Client") },
				})
				if err != nil {
					b.Fatal(err)
				}
				app.Use(mw)
			}
			app.Get("/:code", func(c *fiber.Ctx) error { return c.SendString("ok") })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = app.Listener(ln) }()
			defer func() { _ = app.Shutdown() }()

			client := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 1024}
			url := "http://" + ln.Addr().String() + "/abc1234"
			var seq, ok, limited, bad atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			cpu := startCPU(b, redisCPU)
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI(url)
				req.Header.Set("X-Client", "client-"+strconv.FormatInt(seq.Add(1), 10))
				for pb.Next() {
					switch err := client.Do(req, resp); {
					case err != nil:
						bad.Add(1)
					case resp.StatusCode() == 200:
						ok.Add(1)
					case resp.StatusCode() == 429:
						limited.Add(1)
					default:
						bad.Add(1)
					}
				}
			})
			b.StopTimer()
			cpu.stop()
			if bad.Load() > 0 {
				b.Fatalf("%d failed requests", bad.Load())
			}
			b.ReportMetric(float64(limited.Load())/float64(b.N), "429/op")
		})
	}
}
