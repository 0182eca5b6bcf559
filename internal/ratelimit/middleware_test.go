package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/clientip"
	"github.com/linkgate/linkgate/internal/problem"
)

// testApp is a Fiber app with a minimal version of linkgate's error handler:
// *problem.Details as application/problem+json, keeping the headers already
// set, and *fiber.Error as its status.
func testApp(t *testing.T, mw fiber.Handler) *fiber.App {
	t.Helper()
	app := fiber.New(fiber.Config{ErrorHandler: problemErrorHandler})
	app.Use(mw)
	app.Get("/ok", func(c *fiber.Ctx) error { return c.SendString("ok") })
	app.Get("/redirect", func(c *fiber.Ctx) error { return c.Redirect("https://example.com/", fiber.StatusFound) })
	app.Get("/moved", func(c *fiber.Ctx) error { return c.Redirect("https://example.com/", fiber.StatusMovedPermanently) })
	app.Get("/not-modified", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNotModified) })
	app.Get("/missing", func(c *fiber.Ctx) error { return fiber.ErrNotFound })
	app.Get("/gone", func(c *fiber.Ctx) error { return problem.New(410, "gone", "Gone", "expired") })
	app.Get("/fiber-redirect-error", func(c *fiber.Ctx) error { return fiber.NewError(fiber.StatusTemporaryRedirect) })
	return app
}

// problemErrorHandler is the minimal error handler of the tests.
func problemErrorHandler(c *fiber.Ctx, err error) error {
	var pd *problem.Details
	if errors.As(err, &pd) {
		body, merr := json.Marshal(pd)
		if merr != nil {
			return merr
		}
		c.Set(fiber.HeaderContentType, problem.ContentType)
		return c.Status(pd.Status).Send(body)
	}
	code := fiber.StatusInternalServerError
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code = fe.Code
	}
	return c.SendStatus(code)
}

func get(t *testing.T, app *fiber.App, path, client string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if client != "" {
		req.Header.Set("X-Client", client)
	}
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func byHeader(c *fiber.Ctx) string { return c.Get("X-Client") }

// recordingDecider remembers the decisions it passes on.
type recordingDecider struct {
	Decider
	mu   sync.Mutex
	last Decision
}

func (r *recordingDecider) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	d, err := r.Decider.Allow(ctx, p, key, cost)
	r.mu.Lock()
	r.last = d
	r.mu.Unlock()
	return d, err
}

func (r *recordingDecider) lastDecision() Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

var limiterHeaders = []string{HeaderRateLimit, HeaderRateLimitPolicy, HeaderRetryAfter,
	HeaderLegacyLimit, HeaderLegacyRemaining, HeaderLegacyReset}

func noLimiterHeaders(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	for _, h := range limiterHeaders {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("%s: has %s: %q, want none", what, h, v)
		}
	}
}

// TestMiddlewareHeadersMatchScript: the RateLimit fields carry exactly what
// the script decided, request after request, through the burst and the 429
// (Retry-After, RateLimit, RateLimit-Policy and the problem+json body).
func TestMiddlewareHeadersMatchScript(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			rd := &recordingDecider{Decider: kind.make(t, c, prefix+kind.name+":", 5*time.Second)}
			rec := newTestRecorder()
			p := mustPolicy(t, "create", "30/1m:10") // a token every 2s
			mw, err := New(Config{Policy: p, Decider: rd, KeyFunc: byHeader, Recorder: rec, LegacyHeaders: true,
				Timeout: 5 * time.Second}) // the decider's own bound: the test reads every decision
			if err != nil {
				t.Fatal(err)
			}
			app := testApp(t, mw)
			rkey := prefix + kind.name + ":{create:alice}"

			// The bucket refills one token every 2s, so the whole-second fields
			// (t, the legacy reset, Retry-After) are 2 per token taken only
			// while less than a second has passed since the first request: by
			// Redis's clock, which the local one bounds from above. After that
			// (a stalled machine) they must still be what the decision says.
			start := time.Now()
			exact := func() bool { return time.Since(start) < time.Second }
			for i := int64(1); i <= 10; i++ {
				resp := get(t, app, "/ok", "alice")
				if resp.StatusCode != 200 {
					t.Fatalf("request %d: status %d", i, resp.StatusCode)
				}
				d := rd.lastDecision()
				if d.Remaining != 10-i || d.Source != SourceRedis {
					t.Fatalf("request %d: decision %+v, want %d remaining from redis", i, d, 10-i)
				}
				tokens, _, _ := bucketState(t, c, rkey)
				if tokens/p.Period.Microseconds() != d.Remaining {
					t.Fatalf("request %d: redis holds %d whole tokens, decision says %d", i, tokens/p.Period.Microseconds(), d.Remaining)
				}
				// t is the seconds to full, rounded up: 2s per token taken.
				reset := ceilSeconds(d.Reset)
				if exact() && reset != 2*i {
					t.Fatalf("request %d: decision %+v, want %ds to full", i, d, 2*i)
				}
				wantRL := `"create";r=` + strconv.FormatInt(10-i, 10) + ";t=" + strconv.FormatInt(reset, 10)
				if got := resp.Header.Get(HeaderRateLimit); got != wantRL {
					t.Fatalf("request %d: RateLimit %q, want %q (decision %+v)", i, got, wantRL, d)
				}
				if got := resp.Header.Get(HeaderRateLimitPolicy); got != `"create";q=10;w=20` {
					t.Fatalf("RateLimit-Policy %q", got)
				}
				if got := resp.Header.Get(HeaderLegacyRemaining); got != strconv.FormatInt(d.Remaining, 10) {
					t.Fatalf("X-RateLimit-Remaining %q, decision %+v", got, d)
				}
				if resp.Header.Get(HeaderLegacyLimit) != "10" || resp.Header.Get(HeaderLegacyReset) != strconv.FormatInt(reset, 10) {
					t.Fatalf("legacy headers %v", resp.Header)
				}
				if resp.Header.Get(HeaderRetryAfter) != "" {
					t.Fatalf("Retry-After on an allowed request")
				}
			}

			resp := get(t, app, "/ok", "alice")
			d := rd.lastDecision()
			if resp.StatusCode != fiber.StatusTooManyRequests || d.Allowed {
				t.Fatalf("11th request: status %d, decision %+v; want 429", resp.StatusCode, d)
			}
			wantRetry := ceilSeconds(d.RetryAfter)
			if exact() && wantRetry != 2 {
				t.Fatalf("11th request: decision %+v, want a Retry-After of 2s", d)
			}
			if got := resp.Header.Get(HeaderRetryAfter); got != strconv.FormatInt(wantRetry, 10) {
				t.Fatalf("Retry-After %q, want %d (decision %+v)", got, wantRetry, d)
			}
			if exact() && ceilSeconds(d.Reset) != 20 {
				t.Fatalf("11th request: decision %+v, want 20s to full", d)
			}
			if got, want := resp.Header.Get(HeaderRateLimit), `"create";r=0;t=`+strconv.FormatInt(ceilSeconds(d.Reset), 10); got != want {
				t.Fatalf("429 RateLimit %q, want %q", got, want)
			}
			if got := resp.Header.Get(HeaderRateLimitPolicy); got != `"create";q=10;w=20` {
				t.Fatalf("429 RateLimit-Policy %q", got)
			}
			checkQuotaBody(t, resp, "create")

			// Another client is not affected.
			if resp := get(t, app, "/ok", "bob"); resp.StatusCode != 200 || resp.Header.Get(HeaderRateLimit) != `"create";r=9;t=2` {
				t.Fatalf("other client: %d %q", resp.StatusCode, resp.Header.Get(HeaderRateLimit))
			}
			m, _, _ := rec.snapshot()
			if m["create/allowed"] != 11 || m["create/limited"] != 1 {
				t.Fatalf("recorded decisions %v, want 11 allowed and 1 limited", m)
			}
		})
	}
}

func checkQuotaBody(t *testing.T, resp *http.Response, policy string) {
	t.Helper()
	if ct := resp.Header.Get(fiber.HeaderContentType); ct != problem.ContentType {
		t.Fatalf("429 Content-Type %q, want %s", ct, problem.ContentType)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("429 body %q: %v", raw, err)
	}
	if body["type"] != problem.TypePrefix+"quota-exceeded" || body["status"] != float64(429) ||
		body["policy"] != policy || body["title"] == "" || !strings.Contains(body["detail"].(string), policy) {
		t.Fatalf("429 body %s", raw)
	}
}

// TestMiddlewareStatuses: limiter fields on every non-3xx response, also
// ones produced by an error, and none on 3xx; a 429 on a redirect route is
// not a 3xx and carries them.
func TestMiddlewareStatuses(t *testing.T) {
	clock := newFakeClock()
	p := mustPolicy(t, "redirect", "1200/1m:3")
	mw, err := New(Config{Policy: p, Decider: NewLocalLimiter(LocalConfig{Now: clock.Now}), KeyFunc: byHeader})
	if err != nil {
		t.Fatal(err)
	}
	app := testApp(t, mw)
	tests := map[string]struct {
		path        string
		status      int
		wantHeaders bool
	}{
		"200":                 {"/ok", 200, true},
		"302 redirect":        {"/redirect", 302, false},
		"301 redirect":        {"/moved", 301, false},
		"304":                 {"/not-modified", 304, false},
		"404 fiber error":     {"/missing", 404, true},
		"410 problem":         {"/gone", 410, true},
		"307 from an error":   {"/fiber-redirect-error", 307, false},
		"404 no route at all": {"/nope", 404, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			client := "c-" + name
			resp := get(t, app, tt.path, client)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.wantHeaders {
				if resp.Header.Get(HeaderRateLimit) != `"redirect";r=2;t=1` || resp.Header.Get(HeaderRateLimitPolicy) != `"redirect";q=3;w=1` {
					t.Fatalf("headers %v", resp.Header)
				}
				return
			}
			noLimiterHeaders(t, tt.path, resp)
			// The bucket was still charged: three requests and the next is a 429
			// that carries the fields although the route redirects.
			get(t, app, tt.path, client)
			get(t, app, tt.path, client)
			resp = get(t, app, tt.path, client)
			if resp.StatusCode != 429 || resp.Header.Get(HeaderRetryAfter) != "1" ||
				resp.Header.Get(HeaderRateLimit) != `"redirect";r=0;t=1` || resp.Header.Get(HeaderRateLimitPolicy) == "" {
				t.Fatalf("4th request: %d %v", resp.StatusCode, resp.Header)
			}
			checkQuotaBody(t, resp, "redirect")
		})
	}
}

func TestMiddlewareDeciderFailure(t *testing.T) {
	failing := deciderFunc(func(context.Context, Policy, string, int64) (Decision, error) {
		return Decision{}, errors.New("backend down")
	})
	unchecked := deciderFunc(func(_ context.Context, p Policy, _ string, _ int64) (Decision, error) {
		return Decision{Allowed: true, Limit: p.Burst, Source: SourceNone}, nil
	})
	tests := map[string]struct {
		decider  Decider
		failOpen bool
		status   int
		decision string
	}{
		"error, fail open":        {failing, true, 200, DecisionFailOpen},
		"error, fail closed":      {failing, false, 500, DecisionError},
		"unchecked fallback":      {unchecked, false, 200, DecisionFailOpen},
		"unchecked and fail open": {unchecked, true, 200, DecisionFailOpen},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := mustPolicy(t, "redirect", "1/1h")
			p.FailOpen = tt.failOpen
			rec := newTestRecorder()
			mw, err := New(Config{Policy: p, Decider: tt.decider, Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			resp := get(t, testApp(t, mw), "/ok", "")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			noLimiterHeaders(t, name, resp)
			if m, _, _ := rec.snapshot(); m["redirect/"+tt.decision] != 1 || len(m) != 1 {
				t.Fatalf("recorded %v, want one %s", m, tt.decision)
			}
		})
	}
}

func TestMiddlewareConfig(t *testing.T) {
	t.Run("missing decider", func(t *testing.T) {
		if _, err := New(Config{Policy: mustPolicy(t, "api", "1/1s")}); err == nil {
			t.Fatal("New without a Decider succeeded")
		}
	})
	t.Run("invalid policy", func(t *testing.T) {
		if _, err := New(Config{Policy: Policy{Name: "api"}, Decider: NewLocalLimiter(LocalConfig{})}); err == nil {
			t.Fatal("New with a zero policy succeeded")
		}
	})
	t.Run("disabled policy needs no decider and sends nothing", func(t *testing.T) {
		mw, err := New(Config{Policy: mustPolicy(t, "api", "off")})
		if err != nil {
			t.Fatal(err)
		}
		app := testApp(t, mw)
		for range 3 {
			resp := get(t, app, "/ok", "")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			noLimiterHeaders(t, "disabled", resp)
		}
	})
	t.Run("Next skips", func(t *testing.T) {
		rec := newTestRecorder()
		mw, err := New(Config{
			Policy: mustPolicy(t, "api", "1/1h"), Decider: NewLocalLimiter(LocalConfig{}), Recorder: rec,
			Next: func(c *fiber.Ctx) bool { return c.Path() == "/ok" },
		})
		if err != nil {
			t.Fatal(err)
		}
		app := testApp(t, mw)
		for range 3 {
			resp := get(t, app, "/ok", "")
			if resp.StatusCode != 200 {
				t.Fatalf("skipped route limited: %d", resp.StatusCode)
			}
			noLimiterHeaders(t, "skipped", resp)
		}
		if m, _, _ := rec.snapshot(); len(m) != 0 {
			t.Fatalf("skipped requests recorded: %v", m)
		}
		if resp := get(t, app, "/missing", ""); resp.Header.Get(HeaderRateLimit) == "" {
			t.Fatal("other route not limited")
		}
	})
	t.Run("default key is the client IP, deadline is Timeout on the user context", func(t *testing.T) {
		type ctxKey struct{}
		var gotKey string
		var gotValue any
		var gotDeadline time.Duration
		d := deciderFunc(func(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
			gotKey, gotValue = key, ctx.Value(ctxKey{})
			dl, _ := ctx.Deadline()
			gotDeadline = time.Until(dl)
			return Decision{Allowed: true, Limit: 1, Source: SourceLocal}, nil
		})
		mw, err := New(Config{Policy: mustPolicy(t, "api", "1/1h"), Decider: d, Timeout: 30 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		app := fiber.New()
		app.Use(func(c *fiber.Ctx) error {
			c.SetUserContext(context.WithValue(context.Background(), ctxKey{}, "request-scoped"))
			return c.Next()
		}, mw)
		app.Get("/", func(c *fiber.Ctx) error { return c.SendString(c.IP()) })
		resp, err := app.Test(httptest.NewRequest(http.MethodGet, "/", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		ip, _ := io.ReadAll(resp.Body)
		if gotKey != string(ip) || gotKey == "" {
			t.Fatalf("key %q, want the client IP %q", gotKey, ip)
		}
		if gotValue != "request-scoped" || gotDeadline <= 0 || gotDeadline > 30*time.Millisecond {
			t.Fatalf("decider context: value %v, deadline in %v; want the user context with a 30ms deadline", gotValue, gotDeadline)
		}
	})
}

// TestKeyByAPIKeyOrIP: an API key identity wins; otherwise the client IP as
// Fiber sees it through the trusted proxies only.
func TestKeyByAPIKeyOrIP(t *testing.T) {
	var got string
	d := deciderFunc(func(_ context.Context, p Policy, key string, _ int64) (Decision, error) {
		got = key
		return Decision{Allowed: true, Limit: p.Burst, Source: SourceLocal}, nil
	})
	mw, err := New(Config{
		Policy: mustPolicy(t, "api", "1/1h"), Decider: d,
		KeyFunc: KeyByAPIKeyOrIP(func(c *fiber.Ctx) string { return c.Get("X-Key-ID") }, clientip.New([]string{"0.0.0.0"})),
	})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{
		ProxyHeader:             fiber.HeaderXForwardedFor,
		EnableTrustedProxyCheck: true,
		TrustedProxies:          []string{"0.0.0.0"}, // app.Test's remote address
	})
	app.Use(mw)
	app.Get("/", func(c *fiber.Ctx) error { return nil })
	tests := map[string]struct {
		keyID, xff, want string
	}{
		"api key":                  {"k_123", "203.0.113.7", "key:k_123"},
		"ip through trusted proxy": {"", "203.0.113.7", "ip:203.0.113.7"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("X-Forwarded-For", tt.xff)
			if tt.keyID != "" {
				req.Header.Set("X-Key-ID", tt.keyID)
			}
			resp, err := app.Test(req, -1)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got != tt.want {
				t.Fatalf("key %q, want %q", got, tt.want)
			}
		})
	}

	// From an untrusted peer the header is ignored.
	untrusted := fiber.New(fiber.Config{ProxyHeader: fiber.HeaderXForwardedFor, EnableTrustedProxyCheck: true})
	untrusted.Use(mw)
	untrusted.Get("/", func(c *fiber.Ctx) error { return nil })
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp, err := untrusted.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got != "ip:0.0.0.0" {
		t.Fatalf("spoofed X-Forwarded-For from an untrusted peer: key %q, want the peer address", got)
	}
}

// TestKeyByIPAllocatesOnce: without trusted proxies a client IP key is the
// peer address, made with one allocation (the key string itself). The
// request comes as fasthttp's server passes it (a TCP peer address; app.Test's
// connection makes a new address on every call).
func TestKeyByIPAllocatesOnce(t *testing.T) {
	key := KeyByAPIKeyOrIP(func(*fiber.Ctx) string { return "" }, clientip.New(nil))
	app := fiber.New()
	var got string
	var allocs float64
	app.Get("/", func(c *fiber.Ctx) error {
		got = key(c)
		allocs = testing.AllocsPerRun(100, func() { _ = key(c) })
		return nil
	})
	rc := &fasthttp.RequestCtx{}
	rc.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}, nil)
	rc.Request.Header.SetMethod(fiber.MethodGet)
	rc.Request.SetRequestURI("/")
	app.Handler()(rc)
	if got != "ip:192.0.2.7" || allocs != 1 {
		t.Fatalf("key %q with %v allocations, want the peer's \"ip:192.0.2.7\" with 1", got, allocs)
	}
}

// TestNestedLimitersListBothPolicies: when two limiters apply to a request,
// RateLimit and RateLimit-Policy carry one item each, the inner limiter's
// first, on an allowed response and on the inner limiter's 429; the legacy
// fields are the inner limiter's.
func TestNestedLimitersListBothPolicies(t *testing.T) {
	local := NewLocalLimiter(LocalConfig{Now: newFakeClock().Now}) // the t values assume no refill between requests
	mw := func(name, spec string) fiber.Handler {
		h, err := New(Config{Policy: mustPolicy(t, name, spec), Decider: local, KeyFunc: byHeader, LegacyHeaders: true})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	app := fiber.New(fiber.Config{ErrorHandler: problemErrorHandler})
	app.Use(mw("outer", "100/1h:100"), mw("inner", "2/1h:2"))
	app.Get("/ok", func(c *fiber.Ctx) error { return c.SendString("ok") })
	for i, want := range []struct {
		status       int
		rl, policies []string
		legacyLeft   string
	}{
		{200, []string{`"inner";r=1;t=1800`, `"outer";r=99;t=36`}, []string{`"inner";q=2;w=3600`, `"outer";q=100;w=3600`}, "1"},
		{200, []string{`"inner";r=0;t=3600`, `"outer";r=98;t=72`}, []string{`"inner";q=2;w=3600`, `"outer";q=100;w=3600`}, "0"},
		{429, []string{`"inner";r=0;t=3600`, `"outer";r=97;t=108`}, []string{`"inner";q=2;w=3600`, `"outer";q=100;w=3600`}, "0"},
	} {
		resp := get(t, app, "/ok", "alice")
		rl, policies := resp.Header.Values(HeaderRateLimit), resp.Header.Values(HeaderRateLimitPolicy)
		if resp.StatusCode != want.status || !slices.Equal(rl, want.rl) || !slices.Equal(policies, want.policies) ||
			resp.Header.Get(HeaderLegacyRemaining) != want.legacyLeft || len(resp.Header.Values(HeaderLegacyRemaining)) != 1 {
			t.Fatalf("request %d: %d, RateLimit %q, RateLimit-Policy %q, X-RateLimit-Remaining %q; want %d, %q, %q, %q",
				i+1, resp.StatusCode, rl, policies, resp.Header.Values(HeaderLegacyRemaining), want.status, want.rl, want.policies, want.legacyLeft)
		}
	}
}
