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
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/apikeys"
	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/testenv"
)

// TestMadeUpKeysAreRationed: the store reads of API keys that turn out
// unknown are charged to the client's keylookup budget (the api policy's
// numbers); once it is spent, such requests get 429 before the store is
// read. Valid keys are never charged, and another client is not held back.
// Embedded (local buckets) and production (Redis buckets), the app wired as
// Run wires it.
func TestMadeUpKeysAreRationed(t *testing.T) {
	const adminKey = "the-admin-key-for-this-test"
	for name, env := range map[string]func() map[string]string{
		"embedded": func() map[string]string {
			return map[string]string{"LINKGATE_DATABASE_URL": "sqlite://" + filepath.Join(t.TempDir(), "keys.db")}
		},
		"production": func() map[string]string {
			return map[string]string{"LINKGATE_DATABASE_URL": testenv.PostgresURL(t), "LINKGATE_REDIS_URL": testenv.StartRedis(t).URL()}
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := env()
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

			before := keyReads()
			var answers []string // status, and the policy of a 429
			for range 20 {
				token, _, err := apikeys.Generate(rand.Reader, "made-up", true, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				resp := do("192.0.2.7", fiber.MethodGet, "/api/v1/links", token)
				a := strconv.Itoa(resp.StatusCode())
				if resp.StatusCode() == fiber.StatusTooManyRequests {
					a += " " + strings.SplitN(string(resp.Header.Peek("RateLimit-Policy")), ";", 2)[0]
				}
				answers = append(answers, a)
			}
			// Five failed reads spend the keylookup budget of 5 (and the api
			// bucket of the address, which unknown keys are keyed by). The
			// sixth is read, refused by the api limiter, and its strike finds
			// the budget spent: from then on the address's made-up keys are
			// refused before the store.
			want := []string{"401", "401", "401", "401", "401", `429 "api"`}
			for range 14 {
				want = append(want, `429 "keylookup"`)
			}
			if !slices.Equal(answers, want) {
				t.Fatalf("20 made-up keys from one address: %q, want %q", answers, want)
			}
			if n := keyReads() - before; n != 6 {
				t.Fatalf("20 made-up keys cost %d store reads, want 6 (the budget of 5, and the read that found it spent)", n)
			}

			// Another address is not held back, and a valid key's read costs
			// it nothing; the first address may then use that key (no read).
			spent := charges()
			if s := do("198.51.100.1", fiber.MethodGet, "/api/v1/links", adminKey).StatusCode(); s != fiber.StatusOK {
				t.Fatalf("admin key from another address: %d, want 200", s)
			}
			if n := charges() - spent; n != 0 {
				t.Fatalf("reading a valid key charged the keylookup budget %d times, want 0", n)
			}
			if s := do("192.0.2.7", fiber.MethodGet, "/api/v1/links", adminKey).StatusCode(); s != fiber.StatusOK {
				t.Fatalf("a key read moments ago, from the rationed address: %d, want 200", s)
			}
		})
	}
}
