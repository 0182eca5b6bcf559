package ratelimit

import (
	"context"
	"hash/maphash"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// take is the token-bucket decision of scripts/lua/token_bucket.lua in Go,
// with the same integer arithmetic: b is the bucket state (tokens in scaled
// units, ts in microseconds; the zero bucket with ok=false is a full one),
// now the current time in microseconds. It returns the new state and the
// script's four results.
func take(b bucket, ok bool, now int64, pr params, cost int64) (nb bucket, allowed bool, remaining, retryAfter, reset int64) {
	tokens := pr.capacity
	if ok {
		tokens = b.tokens
		if now < b.ts {
			now = b.ts // clock went back: no refill, ts never moves back
		}
		if now-b.ts >= pr.fullIn(tokens) {
			tokens = pr.capacity
		} else {
			tokens += (now - b.ts) * pr.rate
		}
	}
	need := cost * pr.unit
	if tokens >= need {
		tokens -= need
		return bucket{tokens: tokens, ts: now}, true, tokens / pr.unit, 0, pr.fullIn(tokens)
	}
	return b, false, tokens / pr.unit, ceilDiv(need-tokens, pr.rate), pr.fullIn(tokens)
}

// bucket is the state of one local token bucket.
type bucket struct {
	tokens int64 // scaled units
	ts     int64 // microseconds of the last take
}

// full reports whether b has refilled completely by now.
func (b *bucket) full(now int64, pr params) bool { return now-b.ts >= pr.fullIn(b.tokens) }

// LocalConfig configures a LocalLimiter.
type LocalConfig struct {
	// Now is the clock; only durations are taken from it, so the buckets
	// ignore steps of the wall clock. Default: the monotonic clock.
	Now func() time.Time
	// MaxKeys bounds the buckets kept per policy. Buckets that have refilled
	// completely are dropped first (losslessly: a missing bucket is a full
	// one); only with more than MaxKeys keys active within one refill
	// window are partly drained buckets dropped, which lets those clients
	// start again from a full bucket. Default: 100000.
	MaxKeys int
}

// localShards is the number of independently locked bucket maps per policy.
const localShards = 64

// LocalLimiter is an in-process Decider with the same token-bucket semantics
// as the Redis script, for running without Redis and as the fallback while
// Redis is unavailable. Its limits apply per process. Memory is bounded by
// LocalConfig.MaxKeys per policy. Safe for concurrent use; decisions for
// different keys rarely contend (buckets are sharded).
type LocalLimiter struct {
	clk      elapsed // buckets' times are its microseconds
	maxShard int     // buckets per shard before a sweep
	seed     maphash.Seed

	// tables is copied on write (a new policy, a few times per process), so
	// that a decision reads it without a lock: a read lock would be one more
	// write to a cache line shared by every core on every decision.
	mu     sync.Mutex // serialises writers of tables
	tables atomic.Pointer[map[Policy]*localTable]
}

type localTable struct {
	pr     params
	shards [localShards]localShard
}

type localShard struct {
	mu sync.Mutex
	m  map[string]*bucket
	_  [48]byte // keep shards on separate cache lines (64 bytes each)
}

// NewLocalLimiter returns an empty LocalLimiter.
func NewLocalLimiter(cfg LocalConfig) *LocalLimiter {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	l := &LocalLimiter{
		clk:      newElapsed(cfg.Now),
		maxShard: max(1, cfg.MaxKeys/localShards),
		seed:     maphash.MakeSeed(),
	}
	l.tables.Store(&map[Policy]*localTable{})
	return l
}

// InProcess reports true: decisions never wait, so callers need not bound
// them with a deadline.
func (l *LocalLimiter) InProcess() bool { return true }

// Allow implements Decider. It never fails except for an invalid policy or
// cost, and ignores ctx.
func (l *LocalLimiter) Allow(_ context.Context, p Policy, key string, cost int64) (Decision, error) {
	if err := check(p, cost); err != nil {
		return Decision{}, err
	}
	if p.Disabled {
		return disabledDecision(), nil
	}
	t := l.table(p)
	now := l.clk.nanos() / int64(time.Microsecond)
	s := &t.shards[maphash.String(l.seed, key)%localShards]

	s.mu.Lock()
	b, ok := s.m[key]
	var cur bucket
	if ok {
		cur = *b
	}
	nb, allowed, remaining, retryAfter, reset := take(cur, ok, now, t.pr, cost)
	if allowed {
		if ok {
			*b = nb
		} else {
			if len(s.m) >= l.maxShard {
				s.sweep(now, t.pr, l.maxShard)
			}
			// The key may be a view into a reused request buffer. A new
			// bucket of its own, so that nb stays on the stack for the
			// decisions on known keys.
			stored := new(bucket)
			*stored = nb
			s.m[strings.Clone(key)] = stored
		}
	}
	s.mu.Unlock()

	return Decision{
		Allowed:    allowed,
		Limit:      p.Burst,
		Remaining:  remaining,
		RetryAfter: time.Duration(retryAfter) * time.Microsecond,
		Reset:      time.Duration(reset) * time.Microsecond,
		Source:     SourceLocal,
	}, nil
}

// sweep drops the buckets that are full at now (a missing bucket is a full
// one, so nothing is lost), then arbitrary ones down to 7/8 of limit.
func (s *localShard) sweep(now int64, pr params, limit int) {
	sweepMap(s.m, limit, func(b *bucket) bool { return b.full(now, pr) }, nil)
}

// table returns the bucket table of p, creating it on first use.
func (l *LocalLimiter) table(p Policy) *localTable {
	if t := (*l.tables.Load())[p]; t != nil {
		return t
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.tables.Load()
	if t := old[p]; t != nil {
		return t
	}
	t := &localTable{pr: p.params()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*bucket)
	}
	tables := maps.Clone(old)
	tables[p] = t
	l.tables.Store(&tables)
	return t
}

// Len returns the number of buckets held, over all policies.
func (l *LocalLimiter) Len() int {
	n := 0
	for _, t := range *l.tables.Load() {
		for i := range t.shards {
			s := &t.shards[i]
			s.mu.Lock()
			n += len(s.m)
			s.mu.Unlock()
		}
	}
	return n
}
