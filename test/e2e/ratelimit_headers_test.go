package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// rlBackends are the two limiter back ends a single instance can run with:
// the production stack over a private Redis, and the in-process bucket
// (LINKGATE_REDIS_URL empty). The same headers and 429 semantics must hold
// for both. Each returns the extra environment of the instance.
func rlBackends() map[string]func(t *testing.T) []string {
	return map[string]func(t *testing.T) []string{
		"redis": func(t *testing.T) []string {
			r, _ := rlRedis(t)
			return []string{"LINKGATE_REDIS_URL=" + r.URL(), testRedisTimeout}
		},
		"local": func(t *testing.T) []string { return nil },
	}
}

// Issue 4, item 7 (and the no-Redis variant): a client spends the create
// bucket (5/1h:5) and the redirect bucket (3/1h:3). Allowed non-3xx answers
// carry RateLimit-Policy and a RateLimit whose r counts down by one from
// burst-1 to 0 and whose t grows by one token's time (720 s, 1200 s) per
// request; 302s carry no limiter field at all; each 429 carries Retry-After
// (the seconds until one token exists), r=0, and a quota-exceeded
// problem+json body naming the policy, on the first and on repeated denials.
func TestRateLimitHeadersAnd429(t *testing.T) {
	for name, backend := range rlBackends() {
		t.Run(name, func(t *testing.T) {
			env := append(backend(t), rlPolicies("3/1h:3", "5/1h:5", "off")...)
			s := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "rl.db"), env...)

			// The redirect target, created with the admin key: its own
			// create bucket ("key:bootstrap"), not the anonymous client's.
			r := do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/rl"}`), jsonCT, adminAuth)
			if r.Status != http.StatusCreated {
				t.Fatalf("admin create: %d %s", r.Status, r.Body)
			}
			if f := rlHeaders(t, r); f != (rlFields{Policy: "create", Q: 5, W: 3600, R: 4, T: 720}) {
				t.Fatalf("admin create fields %+v, want create q=5 w=3600 r=4 t=720", f)
			}
			code := r.json(t)["code"].(string)

			// Create: one token per 720 s, so after k requests the bucket
			// is full again in k×720 s, less the few seconds this takes.
			for k := int64(1); k <= 5; k++ {
				r := do(t, "POST", s.URL+"/api/v1/links", []byte(fmt.Sprintf(`{"url":"https://example.com/rl/%d"}`, k)), jsonCT)
				if r.Status != http.StatusCreated {
					t.Fatalf("create %d: %d %s", k, r.Status, r.Body)
				}
				f := rlHeaders(t, r)
				if f.Policy != "create" || f.Q != 5 || f.W != 3600 || f.R != 5-k {
					t.Fatalf("create %d: fields %+v, want create q=5 w=3600 r=%d", k, f, 5-k)
				}
				rlInRange(t, fmt.Sprintf("create %d: t", k), f.T, k*720-10, k*720)
			}
			for i := 0; i < 3; i++ {
				r := do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/rl/over"}`), jsonCT)
				f, ra := rl429(t, r, "create")
				if f.Q != 5 || f.W != 3600 {
					t.Fatalf("create 429: RateLimit-Policy q=%d w=%d, want q=5 w=3600", f.Q, f.W)
				}
				rlInRange(t, "create 429 Retry-After", ra, 710, 720)
				rlInRange(t, "create 429 t", f.T, 3590, 3600)
			}

			// Redirect: 302s carry nothing, a 404 on the same route does,
			// and the fourth request is denied.
			for i := 0; i < 2; i++ {
				r := do(t, "GET", s.URL+"/"+code, nil)
				if r.Status != http.StatusFound {
					t.Fatalf("redirect %d: %d %s", i, r.Status, r.Body)
				}
				rlNoHeaders(t, r, "302 from the redirect policy")
			}
			r = do(t, "GET", s.URL+"/nosuchcode9", nil)
			if r.Status != http.StatusNotFound {
				t.Fatalf("unknown code: %d %s", r.Status, r.Body)
			}
			f := rlHeaders(t, r)
			if f.Policy != "redirect" || f.Q != 3 || f.W != 3600 || f.R != 0 {
				t.Fatalf("404 fields %+v, want redirect q=3 w=3600 r=0", f)
			}
			rlInRange(t, "404 t", f.T, 3590, 3600)
			for i := 0; i < 2; i++ {
				f, ra := rl429(t, do(t, "GET", s.URL+"/"+code, nil), "redirect")
				if f.Q != 3 || f.W != 3600 {
					t.Fatalf("redirect 429 policy fields %+v, want q=3 w=3600", f)
				}
				rlInRange(t, "redirect 429 Retry-After", ra, 1190, 1200)
			}

			m := scrape(t, s)
			want := map[string]float64{
				rlDecisions("create", "allowed"):   6,
				rlDecisions("create", "limited"):   3,
				rlDecisions("redirect", "allowed"): 3,
				rlDecisions("redirect", "limited"): 2,
				`http_requests_total{method="POST",path="/api/v1/links",service="linkgate",status_code="429"}`: 3,
				`http_requests_total{method="GET",path="/:code",service="linkgate",status_code="429"}`:         2,
			}
			for series, v := range want {
				if m[series] != v {
					t.Errorf("%s = %v, want %v", series, m[series], v)
				}
			}
		})
	}
}

// Issue 4, item 7: health probes and /metrics are never limited. Every
// class is at 1/1h:1 and the client has already spent all three buckets
// (each second request is a 429); 50 requests to each probe still get 200s
// without limiter fields, and the client is still limited afterwards.
func TestRateLimitProbesNeverLimited(t *testing.T) {
	r, _ := rlRedis(t)
	s := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "rl.db"),
		append([]string{"LINKGATE_REDIS_URL=" + r.URL(), testRedisTimeout}, rlPolicies("1/1h:1", "1/1h:1", "1/1h:1")...)...)

	code := s.create(t, `{"url":"https://example.com/probes"}`)["code"].(string)
	rl429(t, do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/p2"}`), jsonCT), "create")
	if r := do(t, "GET", s.URL+"/api/v1/links/"+code, nil); r.Status != http.StatusOK {
		t.Fatalf("GET link: %d %s", r.Status, r.Body)
	}
	rl429(t, do(t, "GET", s.URL+"/api/v1/links/"+code, nil), "api")
	if r := do(t, "GET", s.URL+"/"+code, nil); r.Status != http.StatusFound {
		t.Fatalf("redirect: %d %s", r.Status, r.Body)
	}
	rl429(t, do(t, "GET", s.URL+"/"+code, nil), "redirect")

	paths := []string{"/live", "/ready", "/health", "/metrics"}
	var mu sync.Mutex
	var bad []string
	counts := rlCount(t, 50*len(paths), 4, func(i int) (response, error) {
		r, err := edgeDo(client, "GET", s.URL+paths[i%len(paths)], nil)
		if err == nil && (r.Status != http.StatusOK || r.Header.Get("RateLimit") != "" ||
			r.Header.Get("RateLimit-Policy") != "" || r.Header.Get("Retry-After") != "") {
			mu.Lock()
			bad = append(bad, fmt.Sprintf("%s: %d %v", paths[i%len(paths)], r.Status, r.Header))
			mu.Unlock()
		}
		return r, err
	})
	if counts[http.StatusOK] != 50*len(paths) || len(bad) > 0 {
		t.Fatalf("probes: statuses %v; e.g. %v", counts, bad[:min(3, len(bad))])
	}
	rl429(t, do(t, "GET", s.URL+"/"+code, nil), "redirect")
	rl429(t, do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/p3"}`), jsonCT), "create")
}

// Issue 4: guessing API keys is limited. Bad keys are refused only after the
// limiter has run, keyed by the client IP, so of 50 requests with random
// bearer tokens from one address at api 10/1h:10, exactly 10 get a 401 (with
// the limiter fields) and 40 a 429. A valid key is its own bucket; no token
// ends up in a Redis key. Tokens not in the lg_<id>_<secret> shape are all
// checked against the bootstrap key's row, which the first ones read from
// the store (charged to the address's keylookup bucket) and the rest reuse.
func TestRateLimitKeyGuessing(t *testing.T) {
	r, rdb := rlRedis(t)
	s := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "rl.db"),
		append([]string{"LINKGATE_REDIS_URL=" + r.URL(), testRedisTimeout}, rlPolicies("off", "off", "10/1h:10")...)...)

	tokens := make([]string, 50)
	for i := range tokens {
		var b [16]byte
		_, _ = rand.Read(b[:])
		tokens[i] = "lg_" + hex.EncodeToString(b[:])
	}
	var mu sync.Mutex
	var bad []string
	counts := rlCount(t, len(tokens), 5, func(i int) (response, error) {
		r, err := edgeDo(client, "GET", s.URL+"/api/v1/links", nil, "Authorization: Bearer "+tokens[i])
		if err != nil {
			return r, err
		}
		f := rlRateLimitRe.FindStringSubmatch(r.Header.Get("RateLimit"))
		if f == nil || f[1] != "api" || r.Header.Get("RateLimit-Policy") != `"api";q=10;w=3600` {
			mu.Lock()
			bad = append(bad, fmt.Sprintf("%d with RateLimit %q RateLimit-Policy %q", r.Status,
				r.Header.Get("RateLimit"), r.Header.Get("RateLimit-Policy")))
			mu.Unlock()
		}
		return r, err
	})
	if counts[http.StatusUnauthorized] != 10 || counts[http.StatusTooManyRequests] != 40 || len(counts) != 2 {
		t.Fatalf("50 guesses: statuses %v, want 10×401 and 40×429", counts)
	}
	if len(bad) > 0 {
		t.Fatalf("%d answers without the api fields, e.g. %s", len(bad), bad[0])
	}
	rl429(t, do(t, "GET", s.URL+"/api/v1/links", nil, "Authorization: Bearer "+tokens[0]), "api")

	ok := do(t, "GET", s.URL+"/api/v1/links", nil, adminAuth)
	if ok.Status != http.StatusOK {
		t.Fatalf("admin list after the guesses: %d %s", ok.Status, ok.Body)
	}
	if f := rlHeaders(t, ok); f.Policy != "api" || f.R != 9 {
		t.Fatalf("admin list fields %+v, want its own api bucket with r=9", f)
	}
	keys := rlBucketKeys(t, rdb)
	want := []string{"lg:rl:{api:ip:127.0.0.1}", "lg:rl:{api:key:bootstrap}", "lg:rl:{keylookup:net:127.0.0.1}"}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Fatalf("bucket keys %q, want %q", keys, want)
	}
	for _, k := range keys {
		if strings.Contains(k, adminKey) || strings.Contains(k, "lg_") {
			t.Fatalf("a secret reached a Redis key: %q", k)
		}
	}
	m := scrape(t, s)
	if m[rlDecisions("api", "limited")] != 41 || m[rlDecisions("api", "allowed")] != 11 {
		t.Fatalf("api decisions allowed %v limited %v, want 11 and 41",
			m[rlDecisions("api", "allowed")], m[rlDecisions("api", "limited")])
	}
}
