package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/clientip"
	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/loadtest/baseline/mapserver"
)

// The stack benchmarks measure what one redirect costs linkgate's user-space
// code: the whole app as Run wires it (every middleware, the limiter, metrics,
// click counting, the access log) driven in-process through the fasthttp
// handler, with the response serialised as fasthttp would write it. Sockets,
// the kernel and the scheduler are left out, so the numbers are stable on a
// shared machine; "baseline" is the minimal Fiber map server that
// loadtest/baseline serves (package mapserver), measured the same way, so that
//
//	go test ./cmd/linkgate -run '^$' -bench Stack -count 5 | benchstat -col /target -
//
// reads as linkgate's overhead over the baseline. `make bench` measures the
// same configurations end to end with wrk.

const stackCodes = 1000

// BenchmarkStack/target=baseline: the minimal Fiber server of loadtest/baseline.
// BenchmarkStack/target=baseline-metrics: the same with fiberprometheus as
// linkgate registers it, the HTTP metrics library the project requires.
// BenchmarkStack/target=embedded: SQLite, LRU only, local limiter, as shipped.
// BenchmarkStack/target=embedded-nolog and embedded-nolimit: the same without
// the access log (LINKGATE_LOG_LEVEL=warn) or the redirect limiter, to show
// what each costs.
// BenchmarkStack/target=production: PostgreSQL, Redis L2 and Redis limiter.
// BenchmarkStack/target=production-nolimit: the same without the redirect
// limiter.
// BenchmarkStack/target=production-proxied: production behind a trusted
// proxy, as behind the shipped nginx (which sets X-Real-IP on every request;
// every request here carries it, so the client address comes from it).
//
// Each target is wired and seeded once, before its sub-benchmark and on the
// parent b, whose goroutine may fail it and which lives until BenchmarkStack
// ends (the testing package calls a sub-benchmark several times with growing
// b.N). So every target is set up even when -bench selects fewer.
func BenchmarkStack(b *testing.B) {
	proxiedTarget := func(name, realIP string, setup func() fasthttp.RequestHandler) {
		handler := setup()
		b.Run("target="+name, func(b *testing.B) { driveRedirects(b, handler, realIP) })
	}
	target := func(name string, setup func() fasthttp.RequestHandler) { proxiedTarget(name, "", setup) }
	urls := make(map[string]string, stackCodes)
	for i := range stackCodes {
		urls[stackCode(i)] = stackURL(i)
	}
	target("baseline", func() fasthttp.RequestHandler { return mapserver.New(urls).Handler() })
	target("baseline-metrics", func() fasthttp.RequestHandler {
		app, err := mapserver.NewWith(urls, mapserver.Options{Metrics: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		return app.Handler()
	})
	sqlite := func() map[string]string {
		return map[string]string{"LINKGATE_DATABASE_URL": "sqlite://" + filepath.Join(b.TempDir(), "bench.db")}
	}
	target("embedded", func() fasthttp.RequestHandler { return benchWired(b, sqlite()) })
	target("embedded-nolog", func() fasthttp.RequestHandler {
		env := sqlite()
		env["LINKGATE_LOG_LEVEL"] = "warn"
		return benchWired(b, env)
	})
	target("embedded-nolimit", func() fasthttp.RequestHandler {
		env := sqlite()
		env["LINKGATE_RATELIMIT_REDIRECT"] = "off"
		return benchWired(b, env)
	})
	prod := func() map[string]string {
		return map[string]string{
			"LINKGATE_DATABASE_URL": testenv.PostgresURL(b),
			"LINKGATE_REDIS_URL":    testenv.StartRedis(b).URL(),
		}
	}
	target("production", func() fasthttp.RequestHandler { return benchWired(b, prod()) })
	target("production-nolimit", func() fasthttp.RequestHandler {
		env := prod()
		env["LINKGATE_RATELIMIT_REDIRECT"] = "off"
		return benchWired(b, env)
	})
	proxiedTarget("production-proxied", "203.0.113.7", func() fasthttp.RequestHandler {
		env := prod()
		env["LINKGATE_TRUSTED_PROXIES"] = "127.0.0.1"
		return benchWired(b, env)
	})
}

func stackCode(i int) string { return fmt.Sprintf("bench%04d", i) }
func stackURL(i int) string {
	return fmt.Sprintf("https://example.com/articles/%d/some-long-slug-of-a-page?utm_source=bench", i)
}

// benchWired wires linkgate as Run does, with env on top of the shipped
// defaults (limits generous: every request comes from one address), starts
// its background workers (stopped when b ends), seeds the codes through the
// API and returns the app's handler.
func benchWired(b testing.TB, env map[string]string) fasthttp.RequestHandler {
	const generous = "100000000/1s:100000000"
	full := map[string]string{
		"LINKGATE_BASE_URL":           "http://127.0.0.1:8080",
		"LINKGATE_LOG_LEVEL":          "info", // as shipped: access log on
		"LINKGATE_RATELIMIT_REDIRECT": generous,
		"LINKGATE_RATELIMIT_CREATE":   generous,
		"LINKGATE_RATELIMIT_API":      generous,
	}
	for k, v := range env {
		full[k] = v
	}
	cfg, err := config.Load(nil, func(k string) string { return full[k] }, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := wire(ctx, cfg, io.Discard)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	var workers sync.WaitGroup
	workers.Add(3)
	go func() { defer workers.Done(); _ = w.logs.Run(ctx) }()
	go func() { defer workers.Done(); _ = w.counter.Run(ctx) }()
	go func() { defer workers.Done(); _ = w.resolver.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		workers.Wait()
		w.close()
	})
	w.probes.MarkReady()

	handler := w.app.Handler()
	rc := newRequestCtx()
	for i := range stackCodes {
		rc.Request.Reset()
		rc.Response.Reset()
		rc.Request.Header.SetMethod(fiber.MethodPost)
		rc.Request.SetRequestURI("/api/v1/links")
		rc.Request.Header.SetContentType(fiber.MIMEApplicationJSON)
		rc.Request.SetBodyString(fmt.Sprintf(`{"url":%q,"code":%q}`, stackURL(i), stackCode(i)))
		handler(rc)
		if rc.Response.StatusCode() != fiber.StatusCreated {
			b.Fatalf("seeding %s: %d %s", stackCode(i), rc.Response.StatusCode(), rc.Response.Body())
		}
	}
	return handler
}

// newRequestCtx returns a RequestCtx from a loopback client, as fasthttp's
// server would pass for a connection. Only fasthttp's server sets a
// request's time (RequestCtx.Time), so the access log's duration_ms is
// meaningless here; the line is still formatted and written as in the
// server.
func newRequestCtx() *fasthttp.RequestCtx {
	rc := &fasthttp.RequestCtx{}
	rc.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return rc
}

// driveRedirects sends GET /<code> over the seeded codes from b.N requests
// (with X-Real-IP: realIP unless it is empty, as nginx would send it)
// spread over GOMAXPROCS goroutines, each with its own RequestCtx (one per
// connection, as in fasthttp), and serialises every response into a discarding
// writer. Every answer must be the 302 with the code's URL.
func driveRedirects(b *testing.B, handler fasthttp.RequestHandler, realIP string) {
	uris := make([]string, stackCodes)
	for i := range uris {
		uris[i] = "/" + stackCode(i)
	}
	// Warm the caches and check the answers once.
	rc := newRequestCtx()
	for i, uri := range uris {
		rc.Request.Reset()
		rc.Response.Reset()
		rc.Request.Header.SetMethod(fasthttp.MethodGet)
		rc.Request.SetRequestURI(uri)
		handler(rc)
		if rc.Response.StatusCode() != fiber.StatusFound || string(rc.Response.Header.Peek(fiber.HeaderLocation)) != stackURL(i) {
			b.Fatalf("GET %s: %d, Location %q", uri, rc.Response.StatusCode(), rc.Response.Header.Peek(fiber.HeaderLocation))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rc := newRequestCtx()
		bw := bufio.NewWriter(io.Discard)
		i := 0
		for pb.Next() {
			rc.Request.Reset()
			rc.Response.Reset()
			// Set, as a parsed request has it: without one, fasthttp's
			// Method() makes a new []byte("GET") (one allocation per request,
			// the baseline's only one).
			rc.Request.Header.SetMethod(fasthttp.MethodGet)
			rc.Request.Header.SetHost("127.0.0.1:8080")
			if realIP != "" {
				rc.Request.Header.Set(clientip.ProxyHeader, realIP)
			}
			rc.Request.SetRequestURI(uris[i%stackCodes])
			handler(rc)
			if rc.Response.StatusCode() != fiber.StatusFound {
				b.Errorf("GET %s: %d", uris[i%stackCodes], rc.Response.StatusCode())
				return
			}
			if err := rc.Response.Write(bw); err != nil {
				b.Error(err)
				return
			}
			i += 7 // a stride through the codes, not one hot key
		}
		_ = bw.Flush()
	})
}
