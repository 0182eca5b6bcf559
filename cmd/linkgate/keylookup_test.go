package main

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/apikeys"
	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/testenv"
)

// TestMadeUpKeysAreRationed: a request whose key id the store must be asked
// about without being known to exist is charged to the client's keylookup
// budget (the api policy's numbers) before the store is read; once it is
// spent such requests get 429 without a read, sequential or concurrent.
// A real key is charged at its first use only, and another client is not
// held back. Embedded (local buckets) and production (Redis buckets), the app
// wired as Run wires it.
func TestMadeUpKeysAreRationed(t *testing.T) {
	const adminKey = "the-admin-key-for-this-test"
	for name, env := range map[string]func(t *testing.T) map[string]string{
		"embedded": func(t *testing.T) map[string]string {
			return map[string]string{"LINKGATE_DATABASE_URL": "sqlite://" + filepath.Join(t.TempDir(), "keys.db")}
		},
		"production": func(t *testing.T) map[string]string {
			// Redis calls get 2 s, not 50 ms: the counts below are exact, and
			// a fresh connection's first call can overrun 50 ms under -race.
			return map[string]string{"LINKGATE_DATABASE_URL": testenv.PostgresURL(t), "LINKGATE_REDIS_URL": testenv.StartRedis(t).URL(),
				"LINKGATE_REDIS_TIMEOUT": "2s"}
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := env(t) // the subtest's t: it may fail, and it owns the servers
			e["LINKGATE_BASE_URL"] = "http://127.0.0.1:8080"
			e["LINKGATE_RATELIMIT_API"] = "5/1h:5"
			e["LINKGATE_ADMIN_KEY"] = adminKey
			cfg, err := config.Load(nil, func(k string) string { return e[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w, err := wire(ctx, cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			w.probes.MarkReady()
			handler := w.app.Handler()
			do := func(ip, method, path, token string) *fasthttp.Response {
				rc := &fasthttp.RequestCtx{}
				rc.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}, nil)
				rc.Request.Header.SetMethod(method)
				rc.Request.SetRequestURI(path)
				if token != "" {
					rc.Request.Header.Set(fiber.HeaderAuthorization, "Bearer "+token)
				}
				handler(rc)
				return &rc.Response
			}
			metric := func(series string) int {
				body := string(do("127.0.0.1", fiber.MethodGet, "/metrics", "").Body())
				m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\d+)$`).FindStringSubmatch(body)
				if m == nil {
					t.Fatalf("no %s in /metrics", series)
				}
				n, _ := strconv.Atoi(m[1])
				return n
			}
			keyReads := func() int { return metric(`linkgate_store_operation_duration_seconds_count{op="get_api_key"}`) }
			charges := func() int {
				return metric(`linkgate_ratelimit_decisions_total{decision="allowed",policy="keylookup"}`) +
					metric(`linkgate_ratelimit_decisions_total{decision="limited",policy="keylookup"}`)
			}

			madeUp := func() string {
				token, _, err := apikeys.Generate(rand.Reader, "made-up", true, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return token
			}
			before := keyReads()
			var answers []string // status, and the policy of a 429
			for range 20 {
				resp := do("192.0.2.7", fiber.MethodGet, "/api/v1/links", madeUp())
				a := strconv.Itoa(resp.StatusCode())
				if resp.StatusCode() == fiber.StatusTooManyRequests {
					a += " " + strings.SplitN(string(resp.Header.Peek("RateLimit-Policy")), ";", 2)[0]
				}
				answers = append(answers, a)
			}
			want := []string{"401", "401", "401", "401", "401"}
			for range 15 {
				want = append(want, `429 "keylookup"`)
			}
			if !slices.Equal(answers, want) {
				t.Fatalf("20 made-up keys from one address: %q, want %q", answers, want)
			}
			if n := keyReads() - before; n != 5 {
				t.Fatalf("20 made-up keys cost %d store reads, want 5 (the budget)", n)
			}

			// 50 at once from another address: still 5 reads.
			before = keyReads()
			var wg sync.WaitGroup
			for range 50 {
				token := madeUp()
				wg.Go(func() { do("203.0.113.5", fiber.MethodGet, "/api/v1/links", token) })
			}
			wg.Wait()
			if n := keyReads() - before; n != 5 {
				t.Fatalf("50 concurrent made-up keys cost %d store reads, want 5", n)
			}

			// A third address is not held back. Its first use of the admin
			// key is charged (the id was never seen); the key is then known
			// to be real, and is not charged again, from any address.
			spent := charges()
			if s := do("198.51.100.1", fiber.MethodGet, "/api/v1/links", adminKey).StatusCode(); s != fiber.StatusOK {
				t.Fatalf("admin key from another address: %d, want 200", s)
			}
			if n := charges() - spent; n != 1 {
				t.Fatalf("first read of the admin key: %d keylookup charges, want 1", n)
			}
			spent = charges()
			if s := do("192.0.2.7", fiber.MethodGet, "/api/v1/links", adminKey).StatusCode(); s != fiber.StatusOK {
				t.Fatalf("a real key, from the rationed address: %d, want 200", s)
			}
			if n := charges() - spent; n != 0 {
				t.Fatalf("a real key used again: %d keylookup charges, want 0", n)
			}
		})
	}
}
