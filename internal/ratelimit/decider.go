package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Decider makes rate-limit decisions. Implementations in this package:
// RedisLimiter (one EVALSHA per decision), Batcher (concurrent decisions
// pipelined), LocalLimiter (in-process), Fallback (a shared decider behind
// a circuit breaker, with a local bucket while it is open), OverLimitCache
// (remembered denials) and Leaser (tokens leased from a shared decider a few
// at a time). All are safe for concurrent use.
type Decider interface {
	// Allow takes cost tokens from the bucket of key under policy p, if it
	// holds that many, and reports the outcome. A disabled policy allows
	// without any backend call (Source SourceNone). An error means no
	// decision was made: an invalid policy or cost (ErrInvalid), a backend
	// failure, or ctx ending first.
	Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error)
}

// inProcess is implemented by deciders that decide without waiting on
// anything (LocalLimiter): the middleware gives them the request's context
// as it is, without a deadline of its own.
type inProcess interface {
	InProcess() bool
}

// Decision is the outcome of one Allow call.
type Decision struct {
	// Allowed reports whether the tokens were taken.
	Allowed bool
	// Limit is the policy's bucket capacity (Burst): the RateLimit-Policy "q".
	Limit int64
	// Remaining is the number of whole tokens left after this decision.
	Remaining int64
	// RetryAfter is zero when Allowed; otherwise the time until the bucket
	// holds the requested cost (the Retry-After of a 429).
	RetryAfter time.Duration
	// Reset is the time until the bucket is full again (RateLimit "t").
	Reset time.Duration
	// Source is what decided: SourceRedis, SourceLease, SourceLocal or
	// SourceNone.
	Source string
}

// Decision sources.
const (
	SourceRedis = "redis" // the shared bucket in Redis
	SourceLease = "lease" // tokens this instance took earlier from the shared bucket (Leaser)
	SourceLocal = "local" // an in-process bucket (no Redis, or the fallback)
	SourceNone  = "none"  // nothing was checked: disabled policy, or fail-open while Redis is unavailable
)

// ErrInvalid is wrapped by the errors Allow returns for an invalid policy or
// cost; these are programming errors, not backend trouble, and never trip
// the circuit breaker.
var ErrInvalid = errors.New("invalid rate limit request")

// check validates a request shared by every decider: the policy, and a cost
// from 1 to Burst (a larger cost could never be satisfied).
func check(p Policy, cost int64) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !p.Disabled && (cost < 1 || cost > p.Burst) {
		return fmt.Errorf("%w: policy %q: cost %d outside 1..%d", ErrInvalid, p.Name, cost, p.Burst)
	}
	return nil
}

// disabledDecision is the decision for a disabled policy.
func disabledDecision() Decision { return Decision{Allowed: true, Source: SourceNone} }

// Decision labels for Recorder.Decision, a fixed set so that metrics can
// initialise every combination at start.
const (
	DecisionAllowed  = "allowed"   // the bucket had the tokens
	DecisionLimited  = "limited"   // denied: the client got a 429
	DecisionFailOpen = "fail_open" // allowed unchecked: backend unavailable and the policy fails open
	DecisionError    = "error"     // no decision could be made; the request failed with a 500
)

// Decisions returns every decision label, in a stable order.
func Decisions() []string {
	return []string{DecisionAllowed, DecisionLimited, DecisionFailOpen, DecisionError}
}

// Recorder receives the limiter's metrics. It is declared here, by its
// consumer; internal/metrics implements it with Prometheus
// (linkgate_ratelimit_decisions_total{policy,decision},
// linkgate_ratelimit_backend_errors_total, linkgate_ratelimit_fallback_active).
// Implementations must be safe for concurrent use and fast: they are called
// on the request path.
type Recorder interface {
	// Decision counts one middleware decision; decision is one of Decisions().
	Decision(policy, decision string)
	// BackendError counts one failed call to the shared backend (Redis),
	// including timeouts. Calls the open circuit breaker refuses are not
	// errors.
	BackendError()
	// FallbackActive reports whether decisions currently bypass Redis (the
	// breaker is open or probing). Called once at construction with false and
	// then once per change.
	FallbackActive(active bool)
}

// NopRecorder is a Recorder that records nothing; it is the default.
type NopRecorder struct{}

// Decision implements Recorder.
func (NopRecorder) Decision(string, string) {}

// BackendError implements Recorder.
func (NopRecorder) BackendError() {}

// FallbackActive implements Recorder.
func (NopRecorder) FallbackActive(bool) {}
