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

// TestMadeUpKeysAreRationed: a client sending made-up API keys gets as many
// store reads as the api policy allows it requests, then 429 from the
// keylookup policy before the store is read; another client, and a key
// read recently, are not held back by it. Embedded (local buckets) and
// production (Redis buckets), the app wired as Run wires it.
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
			keyReads := func() int {
				body := string(do("127.0.0.1", fiber.MethodGet, "/metrics", "").Body())
				m := regexp.MustCompile(`(?m)^linkgate_store_operation_duration_seconds_count\{op="get_api_key"\} (\d+)$`).FindStringSubmatch(body)
				if m == nil {
					t.Fatalf("no get_api_key count in /metrics")
				}
				n, _ := strconv.Atoi(m[1])
				return n
			}

			before := keyReads()
			var statuses []int
			for range 20 {
				token, _, err := apikeys.Generate(rand.Reader, "made-up", true, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				resp := do("192.0.2.7", fiber.MethodGet, "/api/v1/links", token)
				statuses = append(statuses, resp.StatusCode())
				if resp.StatusCode() == fiber.StatusTooManyRequests {
					if p := string(resp.Header.Peek("RateLimit-Policy")); !strings.HasPrefix(p, `"keylookup";q=5;`) {
						t.Fatalf("429 with RateLimit-Policy %q, want the keylookup policy's", p)
					}
				}
			}
			want := []int{401, 401, 401, 401, 401}
			for range 15 {
				want = append(want, 429)
			}
			if !slices.Equal(statuses, want) {
				t.Fatalf("20 made-up keys from one address: statuses %v, want %v", statuses, want)
			}
			if n := keyReads() - before; n != 5 {
				t.Fatalf("20 made-up keys cost %d store reads, want 5 (the api policy's burst)", n)
			}

			// Another address is not held back; its read makes the admin key
			// known, and then the first address may use it without a charge.
			if s := do("198.51.100.1", fiber.MethodGet, "/api/v1/links", adminKey).StatusCode(); s != fiber.StatusOK {
				t.Fatalf("admin key from another address: %d, want 200", s)
			}
			if s := do("192.0.2.7", fiber.MethodGet, "/api/v1/links", adminKey).StatusCode(); s != fiber.StatusOK {
				t.Fatalf("a key read moments ago, from the rationed address: %d, want 200", s)
			}
		})
	}
}
