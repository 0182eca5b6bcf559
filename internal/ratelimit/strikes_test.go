package ratelimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gofiber/fiber/v2"
)

// TestStrikes: only failures are charged; the charge the bucket refuses
// blocks the key for the refusal's RetryAfter, and then it is free again.
// Other keys are not affected. (A synctest bubble: the clock is exact.)
func TestStrikes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustPolicy(t, "keylookup", "3/1h:3")
		s, err := NewStrikes(StrikesConfig{Policy: p, Decider: NewLocalLimiter(LocalConfig{})})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 3 {
			s.Strike(ctx, "a")
			if _, blocked := s.Blocked("a"); blocked {
				t.Fatalf("blocked after %d strikes of a budget of 3", i+1)
			}
		}
		s.Strike(ctx, "a") // refused: the bucket is empty
		d, blocked := s.Blocked("a")
		if !blocked || d.Allowed || d.RetryAfter != 20*time.Minute || d.Limit != 3 || d.Remaining != 0 {
			t.Fatalf("after the refused strike: %+v, blocked %v; want blocked for 20m (one token of 3/1h)", d, blocked)
		}
		if _, blocked := s.Blocked("b"); blocked {
			t.Fatal("another key is blocked")
		}
		time.Sleep(20*time.Minute - time.Second)
		if d, blocked := s.Blocked("a"); !blocked || d.RetryAfter != time.Second {
			t.Fatalf("a second before the end: %+v, blocked %v", d, blocked)
		}
		time.Sleep(time.Second)
		if _, blocked := s.Blocked("a"); blocked {
			t.Fatal("still blocked once the bucket holds a token")
		}
	})
}

// TestStrikesMiddleware: successful attempts and requests that are not
// attempts cost nothing; failed attempts are charged after the response;
// once blocked, attempts get the 429 of the policy before the handler runs,
// other requests still pass.
func TestStrikesMiddleware(t *testing.T) {
	p := mustPolicy(t, "keylookup", "2/1h:2")
	s, err := NewStrikes(StrikesConfig{Policy: p, Decider: NewLocalLimiter(LocalConfig{})})
	if err != nil {
		t.Fatal(err)
	}
	var handled int
	app := fiber.New(fiber.Config{ErrorHandler: problemErrorHandler})
	app.Use(s.Middleware(byHeader,
		func(c *fiber.Ctx) bool { return c.Get("X-Attempt") != "" },
		func(c *fiber.Ctx) bool { return c.Response().StatusCode() == fiber.StatusUnauthorized }))
	app.Get("/ok", func(c *fiber.Ctx) error {
		handled++
		if c.Get("X-Attempt") == "bad" {
			return c.SendStatus(fiber.StatusUnauthorized)
		}
		return c.SendString("ok")
	})
	send := func(attempt string) *http.Response {
		req := httptest.NewRequest(http.MethodGet, "/ok", nil)
		req.Header.Set("X-Client", "alice")
		if attempt != "" {
			req.Header.Set("X-Attempt", attempt)
		}
		resp, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i, tc := range []struct {
		attempt string
		status  int
	}{
		{"good", 200}, {"good", 200}, {"good", 200}, {"", 200}, // nothing charged
		{"bad", 401}, {"bad", 401}, // the budget of 2
		{"bad", 401},  // handled, and its charge is refused: alice is blocked
		{"good", 429}, // an attempt while blocked, good or not: refused up front
		{"bad", 429},
		{"", 200}, // not an attempt: passes
	} {
		before := handled
		resp := send(tc.attempt)
		if resp.StatusCode != tc.status {
			t.Fatalf("request %d (attempt %q): %d, want %d", i+1, tc.attempt, resp.StatusCode, tc.status)
		}
		if ran := handled > before; ran != (tc.status != 429) {
			t.Fatalf("request %d: handler ran %v with status %d", i+1, ran, resp.StatusCode)
		}
		if tc.status == 429 && (resp.Header.Get(HeaderRetryAfter) != "1800" ||
			resp.Header.Get(HeaderRateLimitPolicy) != `"keylookup";q=2;w=3600` || resp.Header.Get(HeaderRateLimit) == "") {
			t.Fatalf("request %d: 429 fields Retry-After %q, RateLimit-Policy %q, RateLimit %q", i+1,
				resp.Header.Get(HeaderRetryAfter), resp.Header.Get(HeaderRateLimitPolicy), resp.Header.Get(HeaderRateLimit))
		}
		if tc.status != 429 && resp.Header.Get(HeaderRateLimit) != "" {
			t.Fatalf("request %d: RateLimit %q on a request nothing was decided for", i+1, resp.Header.Get(HeaderRateLimit))
		}
	}
}
