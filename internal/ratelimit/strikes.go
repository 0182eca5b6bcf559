package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// StrikesConfig configures Strikes.
type StrikesConfig struct {
	// Policy is the budget of failures per client. Required; a disabled
	// policy never blocks.
	Policy Policy
	// Decider keeps the budget's buckets (shared through Redis in
	// production, so that the failures on every instance count). Required.
	Decider Decider
	// Timeout bounds one charge. Default: 50 * time.Millisecond.
	Timeout time.Duration
	// Recorder counts the charges (allowed or limited) and the attempts
	// refused while blocked (limited). Default: NopRecorder{}.
	Recorder Recorder
	// MaxKeys bounds the blocked clients remembered; forgetting one early
	// lets it make one more attempt. Default: 100000.
	MaxKeys int
	// Now is the clock measuring how long a block holds; only durations are
	// taken from it. Default: the monotonic clock.
	Now func() time.Time
}

// Strikes rations failed attempts per client, charging after the fact: an
// attempt that failed costs the client one token of the policy, one that
// succeeded costs nothing. Once the policy's bucket refuses a charge, the
// client's next attempts are refused up front until that bucket holds a
// token again (the refusal's RetryAfter, measured from before the charge,
// so a block never outlasts what the bucket says).
//
// linkgate rations API key lookups with it: a request whose key the server
// must read from the store is an attempt, a key that turns out unknown a
// failure. Valid keys are never charged, so clients sharing an address are
// not held back by each other's good keys; made-up keys get the policy's
// budget of store reads and then none until it refills. Across instances
// the bucket is shared and each instance learns of the block at its next
// charge, so a blocked client can get one more failed attempt per instance
// per refill.
//
// Safe for concurrent use.
type Strikes struct {
	p       Policy
	d       Decider
	timeout time.Duration
	rec     Recorder
	clk     elapsed
	maxKeys int
	hdr     headers

	mu      sync.Mutex
	blocked map[string]strikeBlock
}

// strikeBlock is a refused charge: the client is blocked until until, and
// its bucket is full again at reset (nanoseconds of the clock).
type strikeBlock struct {
	until, reset int64
}

// NewStrikes returns an empty Strikes.
func NewStrikes(cfg StrikesConfig) (*Strikes, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Decider == nil {
		return nil, errors.New("strikes: Decider is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NopRecorder{}
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	return &Strikes{
		p: cfg.Policy, d: cfg.Decider, timeout: cfg.Timeout, rec: cfg.Recorder,
		clk: newElapsed(cfg.Now), maxKeys: cfg.MaxKeys, hdr: newHeaders(cfg.Policy, false),
		blocked: make(map[string]strikeBlock),
	}, nil
}

// Blocked reports whether key's attempts are refused now, and if so the
// refusal's decision (RetryAfter: until the block ends).
func (s *Strikes) Blocked(key string) (Decision, bool) {
	if s.p.Disabled {
		return Decision{}, false
	}
	now := s.clk.nanos()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blocked[key]
	if !ok {
		return Decision{}, false
	}
	if now >= b.until {
		delete(s.blocked, key)
		return Decision{}, false
	}
	return Decision{Limit: s.p.Burst, RetryAfter: time.Duration(b.until - now),
		Reset: time.Duration(max(0, b.reset-now)), Source: SourceLocal}, true
}

// Strike charges key one failure. When the budget refuses it, key is
// blocked for the refusal's RetryAfter. A charge the Decider cannot make
// (Redis down with a fail-open policy, an expired ctx) blocks nothing.
func (s *Strikes) Strike(ctx context.Context, key string) {
	if s.p.Disabled {
		return
	}
	sent := s.clk.nanos()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	d, err := s.d.Allow(ctx, s.p, key, 1)
	cancel()
	if err != nil || d.Source == SourceNone {
		return
	}
	if d.Allowed {
		s.rec.Decision(s.p.Name, DecisionAllowed)
		return
	}
	s.rec.Decision(s.p.Name, DecisionLimited)
	s.mu.Lock()
	if len(s.blocked) >= s.maxKeys {
		now := s.clk.nanos()
		sweepMap(s.blocked, s.maxKeys, func(b strikeBlock) bool { return now >= b.until }, nil)
	}
	s.blocked[strings.Clone(key)] = strikeBlock{until: sent + int64(d.RetryAfter), reset: sent + int64(d.Reset)}
	s.mu.Unlock()
}

// Middleware returns a Fiber handler for the requests attempt reports as
// attempts (others pass untouched): a client key blocks is refused with the
// same 429 as New's (Retry-After, RateLimit-Policy, RateLimit and a
// quota-exceeded problem naming the policy); otherwise the request runs,
// and if failed then reports a failure it is charged. Allowed attempts get
// no RateLimit fields from it: nothing was decided for them.
func (s *Strikes) Middleware(key func(c *fiber.Ctx) string, attempt, failed func(c *fiber.Ctx) bool) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if s.p.Disabled || !attempt(c) {
			return c.Next()
		}
		k := key(c)
		if d, blocked := s.Blocked(k); blocked {
			s.rec.Decision(s.p.Name, DecisionLimited)
			return refuse(c, s.p, s.hdr, d)
		}
		err := c.Next()
		if failed(c) {
			s.Strike(c.UserContext(), k)
		}
		return err
	}
}
