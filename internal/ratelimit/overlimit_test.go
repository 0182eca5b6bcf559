package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// countingDecider counts the calls that reach the wrapped decider.
type countingDecider struct {
	Decider
	calls atomic.Int64
}

func (c *countingDecider) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	c.calls.Add(1)
	return c.Decider.Allow(ctx, p, key, cost)
}

// TestOverLimitCache: once Redis denies a client, its requests are denied
// locally, with a shrinking Retry-After, until a token can exist; then
// Redis is asked again and allows. Other clients and costs go to Redis.
func TestOverLimitCache(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	r, err := NewRedisLimiter(RedisConfig{Client: c, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	next := &countingDecider{Decider: r}
	o, err := NewOverLimitCache(OverLimitConfig{Next: next})
	if err != nil {
		t.Fatal(err)
	}
	slow := mustPolicy(t, "redirect", "1/1m:2") // a token every minute

	allow(t, o, slow, "bot", 1)
	allow(t, o, slow, "bot", 1)
	first := allow(t, o, slow, "bot", 1)
	if first.Allowed || next.calls.Load() != 3 {
		t.Fatalf("3rd request: %+v after %d calls; want a denial from redis", first, next.calls.Load())
	}
	prev := first.RetryAfter
	for i := range 50 {
		d := allow(t, o, slow, "bot", 1)
		if d.Allowed || d.RetryAfter > prev || d.RetryAfter < prev-time.Second || d.Remaining != 0 ||
			d.Source != SourceRedis || d.Limit != 2 || d.Reset <= d.RetryAfter {
			t.Fatalf("cached denial %d: %+v (previous Retry-After %v)", i, d, prev)
		}
		prev = d.RetryAfter
	}
	if n := next.calls.Load(); n != 3 {
		t.Fatalf("denials within the Retry-After reached redis: %d calls, want 3", n)
	}

	// Another client, and a cost above 1, are not affected.
	if d := allow(t, o, slow, "human", 1); !d.Allowed || next.calls.Load() != 4 {
		t.Fatalf("other client: %+v, %d calls", d, next.calls.Load())
	}
	if d := allow(t, o, slow, "bot", 2); d.Allowed || next.calls.Load() != 5 {
		t.Fatalf("cost 2 for the limited client: %+v, %d calls; want a denial from redis", d, next.calls.Load())
	}

	// After the wait, redis decides again and allows.
	fast := mustPolicy(t, "redirect", "1/1s:1") // a token every second
	allow(t, o, fast, "bot2", 1)
	before := next.calls.Load()
	testenv.WaitFor(t, 5*time.Second, "the bot's next token", func() bool { return allow(t, o, fast, "bot2", 1).Allowed })
	// The first denial and the final allow reach redis; the polls between
	// them (every 5ms for ~1s, some 200) are answered by the cache. A denial
	// is cached from before its call, so the entry can end up to that call's
	// time before the token arrives and one or two more polls reach redis
	// and are denied (and cached) again when calls are slow.
	if n := next.calls.Load() - before; n < 2 || n > 4 {
		t.Fatalf("%d calls reached redis while polling through the denial; want 2 (up to 4 when calls are slow)", n)
	}
}

func TestOverLimitCacheBounded(t *testing.T) {
	deny := deciderFunc(func(_ context.Context, p Policy, _ string, _ int64) (Decision, error) {
		return Decision{Limit: p.Burst, RetryAfter: time.Hour, Reset: time.Hour, Source: SourceRedis}, nil
	})
	o, err := NewOverLimitCache(OverLimitConfig{Next: deny, MaxKeys: 640})
	if err != nil {
		t.Fatal(err)
	}
	p := mustPolicy(t, "redirect", "1/1h")
	for i := range 10_000 {
		allow(t, o, p, "k"+string(rune('a'+i%26))+time.Duration(i).String(), 1)
	}
	n := 0
	for i := range o.shards {
		n += len(o.shards[i].m)
	}
	if n > 640 {
		t.Fatalf("cache holds %d denials, more than MaxKeys 640", n)
	}
}
