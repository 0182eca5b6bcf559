package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
)

// FallbackConfig configures a Fallback.
type FallbackConfig struct {
	// Primary is the shared decider (a Batcher or a RedisLimiter). Put an
	// OverLimitCache in front of the Fallback, not here: an answer from the
	// cache would count as a successful probe of Redis. Required.
	Primary Decider
	// Instances is the expected number of linkgate instances
	// (LINKGATE_INSTANCES): while Redis is unavailable each instance enforces
	// 1/Instances of every policy locally, so that together they stay near
	// the policy. Default: 1.
	Instances int
	// Timeout bounds each call to Primary (a caller's earlier deadline
	// wins); a call that runs out counts as a backend failure. Default: 50ms.
	Timeout time.Duration
	// FailureThreshold is the number of consecutive Primary failures that
	// opens the circuit breaker. Default: 5.
	FailureThreshold uint32
	// OpenTimeout is how long the open breaker refuses to call Primary before
	// letting one probe decision through; a successful probe closes it, a
	// failed one re-opens it. Default: 1s.
	OpenTimeout time.Duration
	// Now is the clock of the local buckets (LocalConfig.Now). (The Redis
	// script never sees it: it reads Redis's own clock.)
	Now func() time.Time
	// LocalMaxKeys bounds the local buckets per policy (LocalConfig.MaxKeys).
	LocalMaxKeys int
	// Logger receives one record per change between using Redis and using
	// the fallback. Default: discard.
	Logger *slog.Logger
	// Recorder receives backend errors and the fallback state. Default:
	// NopRecorder.
	Recorder Recorder
}

// Fallback is the production Decider: it asks Primary through a circuit
// breaker (sony/gobreaker), and when Primary fails or the breaker is open it
// answers at once without Redis: allowing unchecked for a FailOpen policy
// (Source SourceNone), otherwise from an in-process bucket holding the
// policy's rate and burst divided by Instances (Source SourceLocal).
// Backend trouble therefore never becomes an error for the caller; only an
// invalid request or the caller's own cancellation does.
//
// Every failed Primary call is counted (Recorder.BackendError). The change
// to and from the fallback is logged and reported once per transition, not
// per request. Safe for concurrent use.
type Fallback struct {
	primary   Decider
	local     *LocalLimiter
	instances int64
	timeout   time.Duration
	cb        *gobreaker.CircuitBreaker[Decision]
	log       *slog.Logger
	rec       Recorder
}

// NewFallback returns a Fallback, or an error when cfg.Primary is nil.
func NewFallback(cfg FallbackConfig) (*Fallback, error) {
	if cfg.Primary == nil {
		return nil, errors.New("new rate limit fallback: Primary is required")
	}
	if cfg.Instances <= 0 {
		cfg.Instances = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = 5
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NopRecorder{}
	}
	f := &Fallback{
		primary:   cfg.Primary,
		local:     NewLocalLimiter(LocalConfig{Now: cfg.Now, MaxKeys: cfg.LocalMaxKeys}),
		instances: int64(cfg.Instances),
		timeout:   cfg.Timeout,
		log:       cfg.Logger,
		rec:       cfg.Recorder,
	}
	threshold := cfg.FailureThreshold
	f.cb = gobreaker.NewCircuitBreaker[Decision](gobreaker.Settings{
		Name:        "ratelimit-redis",
		MaxRequests: 1, // one probe at a time while half-open; its success closes
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= threshold },
		// A caller that went away says nothing about Redis.
		IsExcluded:    func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: f.stateChanged,
	})
	f.rec.FallbackActive(false)
	return f, nil
}

// stateChanged logs and reports the breaker's transitions. The fallback is
// active in every state but closed; open and half-open alternate while Redis
// stays down, and those flips are only debug records.
func (f *Fallback) stateChanged(_ string, from, to gobreaker.State) {
	switch {
	case from == gobreaker.StateClosed:
		f.log.Warn("rate limiter: Redis unavailable, using local buckets",
			"fallback", "active", "breaker", to.String())
		f.rec.FallbackActive(true)
	case to == gobreaker.StateClosed:
		f.log.Info("rate limiter: Redis recovered, local buckets off",
			"fallback", "inactive", "breaker", to.String())
		f.rec.FallbackActive(false)
	default:
		f.log.Debug("rate limiter: breaker state", "from", from.String(), "to", to.String())
	}
}

// Allow implements Decider.
func (f *Fallback) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	if err := check(p, cost); err != nil {
		return Decision{}, err
	}
	if p.Disabled {
		return disabledDecision(), nil
	}
	d, err := f.cb.Execute(func() (Decision, error) {
		cctx := ctx
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > f.timeout {
			var cancel context.CancelFunc
			cctx, cancel = context.WithTimeout(ctx, f.timeout)
			defer cancel()
		}
		d, err := f.primary.Allow(cctx, p, key, cost)
		if err != nil && !errors.Is(err, context.Canceled) {
			f.rec.BackendError()
		}
		return d, err
	})
	if err == nil {
		return d, nil
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return Decision{}, fmt.Errorf("rate limit %s: %w", p.Name, err)
	}
	if p.FailOpen {
		return Decision{Allowed: true, Limit: p.Burst, Source: SourceNone}, nil
	}
	lp := f.localPolicy(p)
	return f.local.Allow(ctx, lp, key, min(cost, lp.Burst))
}

// localPolicy is p's share for one of Instances instances: the same tokens
// per Instances× the period (exact, however small the limit), and
// ⌈Burst/Instances⌉ tokens of burst. A cost above that local burst is
// charged as the whole local burst.
func (f *Fallback) localPolicy(p Policy) Policy {
	if f.instances == 1 {
		return p
	}
	q := p
	q.Burst = ceilDiv(p.Burst, f.instances)
	if p.Period <= time.Duration(maxCapacity/q.Burst)*time.Microsecond/time.Duration(f.instances) {
		q.Period = p.Period * time.Duration(f.instances)
	} else {
		q.Limit = max(1, p.Limit/f.instances) // too long to scale the period: scale the rate
	}
	return q
}

// Active reports whether decisions currently bypass Primary.
func (f *Fallback) Active() bool { return f.cb.State() != gobreaker.StateClosed }
