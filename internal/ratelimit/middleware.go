package ratelimit

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/clientip"
	"github.com/linkgate/linkgate/internal/problem"
)

// Config configures the Fiber middleware New returns, in the shape of Fiber
// v2's middleware/limiter Config. Fields left zero get the documented
// default.
type Config struct {
	// Next skips the middleware (no decision, no headers) when it returns
	// true; for example for health and metrics routes.
	//
	// Optional. Default: nil
	Next func(c *fiber.Ctx) bool

	// Policy is the limit this middleware enforces. Policy.FailOpen decides
	// what happens when no decision can be made (see New).
	//
	// Required: a valid Policy (possibly Disabled).
	Policy Policy

	// Decider makes the decisions: a Fallback in production, a LocalLimiter
	// without Redis.
	//
	// Required unless Policy.Disabled.
	Decider Decider

	// KeyFunc returns the client's key: its IP as Fiber sees it through the
	// trusted proxies, or an API key's public ID when the request has one.
	// The key ends up inside a Redis key, so it must not be a secret.
	//
	// Optional. Default: func(c *fiber.Ctx) string { return c.IP() }
	KeyFunc func(c *fiber.Ctx) string

	// Timeout is the deadline of one decision, set on a context carrying
	// c.UserContext()'s values (and its cancellation, if it has one). It
	// runs from the decider's first use of that context (see deadlines),
	// and may fall up to a millisecond early: decisions whose deadlines
	// start within the same millisecond share one timer.
	//
	// Optional. Default: 50 * time.Millisecond
	Timeout time.Duration

	// LegacyHeaders adds X-RateLimit-Limit, X-RateLimit-Remaining and
	// X-RateLimit-Reset (delay-seconds until the bucket is full) wherever
	// the RateLimit fields are sent, for clients that predate the draft.
	//
	// Optional. Default: false
	LegacyHeaders bool

	// Recorder counts decisions (Recorder.Decision).
	//
	// Optional. Default: NopRecorder{}
	Recorder Recorder
}

// ConfigDefault returns the default Config: every optional field set to its
// default, Policy and Decider left for the caller.
func ConfigDefault() Config {
	return Config{
		KeyFunc:  func(c *fiber.Ctx) string { return c.IP() },
		Timeout:  defaultTimeout,
		Recorder: NopRecorder{},
	}
}

// configDefault fills cfg's zero optional fields from ConfigDefault.
func configDefault(cfg Config) Config {
	def := ConfigDefault()
	if cfg.KeyFunc == nil {
		cfg.KeyFunc = def.KeyFunc
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.Recorder == nil {
		cfg.Recorder = def.Recorder
	}
	return cfg
}

// Header field names.
const (
	HeaderRateLimit       = "RateLimit"
	HeaderRateLimitPolicy = "RateLimit-Policy"
	HeaderRetryAfter      = fiber.HeaderRetryAfter
	HeaderLegacyLimit     = "X-RateLimit-Limit"
	HeaderLegacyRemaining = "X-RateLimit-Remaining"
	HeaderLegacyReset     = "X-RateLimit-Reset"
)

// New returns a Fiber handler that enforces cfg.Policy per client key.
//
// Allowed requests go on to the next handler; afterwards the response gets
// RateLimit-Policy and RateLimit unless its status is 3xx (redirects are
// cached by browsers, and a 304 would refresh stored headers with values
// that are stale at once). A denied request is answered without calling the
// next handler: Retry-After (delay-seconds, rounded up), RateLimit-Policy
// and RateLimit are set and the handler returns a 429 *problem.Details of
// type quota-exceeded with a "policy" member, which the application's error
// handler renders as application/problem+json keeping those headers.
//
// When the Decider fails (with Fallback: only for an invalid request or a
// cancelled one), a FailOpen policy lets the request through without
// headers; any other policy fails the request with that error (a 500).
//
// New returns an error for an invalid policy, or a missing Decider.
func New(cfg Config) (fiber.Handler, error) {
	cfg = configDefault(cfg)
	p := cfg.Policy
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("rate limit middleware: %w", err)
	}
	if p.Disabled {
		return func(c *fiber.Ctx) error { return c.Next() }, nil
	}
	if cfg.Decider == nil {
		return nil, fmt.Errorf("rate limit middleware %q: Decider is required", p.Name)
	}
	h := newHeaders(p, cfg.LegacyHeaders)
	rec := cfg.Recorder
	dl := &deadlines{timeout: cfg.Timeout}
	ip, _ := cfg.Decider.(inProcess)
	direct := ip != nil && ip.InProcess() // no deadline needed

	return func(c *fiber.Ctx) error {
		if cfg.Next != nil && cfg.Next(c) {
			return c.Next()
		}
		var d Decision
		var err error
		if direct {
			d, err = cfg.Decider.Allow(c.UserContext(), p, cfg.KeyFunc(c), 1)
		} else {
			ctx, cancel := dl.withDeadline(c.UserContext())
			d, err = cfg.Decider.Allow(ctx, p, cfg.KeyFunc(c), 1)
			cancel()
		}
		switch {
		case err != nil && p.FailOpen:
			rec.Decision(p.Name, DecisionFailOpen)
			return c.Next()
		case err != nil:
			rec.Decision(p.Name, DecisionError)
			return err
		case d.Source == SourceNone:
			rec.Decision(p.Name, DecisionFailOpen)
			return c.Next()
		case !d.Allowed:
			rec.Decision(p.Name, DecisionLimited)
			secs := max(1, ceilSeconds(d.RetryAfter))
			c.Set(HeaderRetryAfter, strconv.FormatInt(secs, 10))
			h.set(c, d)
			return problem.New(fiber.StatusTooManyRequests, "quota-exceeded", "Quota exceeded",
				fmt.Sprintf("The %s rate limit is used up; retry in %d s.", p.Name, secs)).With("policy", p.Name)
		}
		rec.Decision(p.Name, DecisionAllowed)
		err = c.Next()
		if s := finalStatus(c, err); s < 300 || s > 399 {
			h.set(c, d)
		}
		return err
	}, nil
}

// KeyByAPIKeyOrIP returns a Config.KeyFunc that keys a request by the
// identity apiKey returns for it ("key:<id>"), or by the client IP from ip
// ("ip:<address>"). The prefixes keep the two kinds of keys apart. apiKey
// must return a public identifier (a key ID), never the secret. ip must be
// the clientip.Source of the app's trusted proxies, so that the address is
// the one c.IP() gives. A client IP key is made with one allocation.
func KeyByAPIKeyOrIP(apiKey func(c *fiber.Ctx) string, ip clientip.Source) func(c *fiber.Ctx) string {
	return func(c *fiber.Ctx) string {
		if id := apiKey(c); id != "" {
			return "key:" + id
		}
		var buf [64]byte // "ip:" and the longest IPv6 text (45 bytes)
		return string(ip.Append(append(buf[:0], "ip:"...), c))
	}
}

// finalStatus is the status the response will have once err (if any) has
// been rendered by the error handler.
func finalStatus(c *fiber.Ctx, err error) int {
	if err == nil {
		return c.Response().StatusCode()
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	var pd *problem.Details
	if errors.As(err, &pd) {
		return pd.Status
	}
	return fiber.StatusInternalServerError
}

// headers renders the fields of one policy. The RateLimit-Policy value is
// fixed, so it is built once.
type headers struct {
	name   string // the policy name as a structured-field String
	policy string
	legacy bool
	limit  string
}

func newHeaders(p Policy, legacy bool) headers {
	name := strconv.Quote(p.Name) // names are [a-z0-9_-]: a valid sf-string
	return headers{
		name:   name,
		policy: name + ";q=" + strconv.FormatInt(p.Burst, 10) + ";w=" + strconv.FormatInt(ceilSeconds(p.Window()), 10),
		legacy: legacy,
		limit:  strconv.FormatInt(p.Burst, 10),
	}
}

// set writes the fields for d (the RateLimit field is `"name";r=R;t=T`).
// Both fields are lists, one item per policy, so when limiters are nested
// each adds its own item (the innermost, which finishes first, comes
// first). The legacy fields hold one value: the innermost limiter's.
func (h headers) set(c *fiber.Ctx, d Decision) {
	var buf [64]byte
	reset := ceilSeconds(d.Reset)
	b := append(buf[:0], h.name...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	hdr := &c.Response().Header
	hdr.Add(HeaderRateLimitPolicy, h.policy)
	hdr.AddBytesV(HeaderRateLimit, b)
	if h.legacy && len(hdr.Peek(HeaderLegacyLimit)) == 0 {
		hdr.Set(HeaderLegacyLimit, h.limit)
		hdr.SetBytesV(HeaderLegacyRemaining, strconv.AppendInt(buf[:0], d.Remaining, 10))
		hdr.SetBytesV(HeaderLegacyReset, strconv.AppendInt(buf[:0], reset, 10))
	}
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }
