package ratelimit

import (
	"context"
	"errors"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// OverLimitConfig configures an OverLimitCache.
type OverLimitConfig struct {
	// Next is the decider whose Redis denials are remembered: a Fallback
	// (only its decisions with Source SourceRedis are cached), a Batcher or a
	// RedisLimiter. Required.
	Next Decider
	// Now is the clock used to measure how long a denial holds; only
	// durations are taken from it (monotonic with time.Now), so an offset
	// between instances' clocks does not matter. Default: time.Now.
	Now func() time.Time
	// MaxKeys bounds the remembered denials; forgetting one early only costs
	// a call to Next. Default: 100000.
	MaxKeys int
}

// OverLimitCache is a Decider in front of a shared one that answers, without
// a network call, the requests of a client that is over its limit. When Next
// denies a one-token request, no token can arrive in that bucket before
// RetryAfter has passed (tokens only arrive at the policy's rate, and other
// instances only take them), so until then every request for that policy
// and key is denied locally with the remaining wait. The time is measured
// from before the call to Next, so the cache never denies a request that
// Next would allow: it is as exact as Next, while a client hammering past
// its limit (a code scanner on the redirect policy) costs Redis one call per
// refill instead of one per request.
//
// Only cost-1 requests use the cache. Its denials carry Source SourceRedis:
// they replay Redis's answer. Safe for concurrent use.
type OverLimitCache struct {
	next     Decider
	now      func() time.Time
	maxShard int
	seed     maphash.Seed
	shards   [localShards]overLimitShard
}

type overLimitKey struct {
	p   Policy
	key string
}

type overLimitEntry struct {
	until, reset time.Time
}

type overLimitShard struct {
	mu sync.Mutex
	m  map[overLimitKey]overLimitEntry
	_  [40]byte
}

// NewOverLimitCache returns an OverLimitCache, or an error when cfg.Next is
// nil.
func NewOverLimitCache(cfg OverLimitConfig) (*OverLimitCache, error) {
	if cfg.Next == nil {
		return nil, errors.New("new over-limit cache: Next is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	c := &OverLimitCache{next: cfg.Next, now: cfg.Now, maxShard: max(1, cfg.MaxKeys/localShards), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[overLimitKey]overLimitEntry)
	}
	return c, nil
}

// Allow implements Decider.
func (c *OverLimitCache) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	if cost != 1 || p.Disabled {
		return c.next.Allow(ctx, p, key, cost)
	}
	k := overLimitKey{p: p, key: key}
	s := &c.shards[maphash.String(c.seed, key)%localShards]
	sent := c.now()
	s.mu.Lock()
	e, ok := s.m[k]
	if ok && !sent.Before(e.until) {
		delete(s.m, k)
		ok = false
	}
	s.mu.Unlock()
	if ok {
		return Decision{Limit: p.Burst, RetryAfter: e.until.Sub(sent), Reset: max(0, e.reset.Sub(sent)), Source: SourceRedis}, nil
	}

	d, err := c.next.Allow(ctx, p, key, cost)
	if err != nil || d.Allowed || d.Source != SourceRedis || d.RetryAfter <= 0 {
		return d, err
	}
	k.key = strings.Clone(key) // the key may be a view into a reused request buffer
	s.mu.Lock()
	if len(s.m) >= c.maxShard {
		s.sweep(sent, c.maxShard)
	}
	s.m[k] = overLimitEntry{until: sent.Add(d.RetryAfter), reset: sent.Add(d.Reset)}
	s.mu.Unlock()
	return d, nil
}

// sweep drops the denials that have run out at now, then arbitrary ones
// down to 7/8 of limit (forgetting a denial early only costs a call to Next).
func (s *overLimitShard) sweep(now time.Time, limit int) {
	sweepMap(s.m, limit, func(e overLimitEntry) bool { return !now.Before(e.until) }, nil)
}
