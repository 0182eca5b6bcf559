package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/testenv"
)

// newClient returns a go-redis client for url tuned by LimiterOptions with
// the given timeout, closed when tb ends. Each call is an independent client
// with its own pool.
func newClient(tb testing.TB, url string, timeout time.Duration) *redis.Client {
	tb.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("parse redis url: %v", err)
	}
	c := redis.NewClient(LimiterOptions(o, timeout))
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// sharedRedis is a client on the shared test Redis (or one started for tb)
// and a key prefix unique to tb. Its timeouts are generous: correctness
// tests under -race must not fail on a slow scheduler.
func sharedRedis(tb testing.TB) (string, *redis.Client, string) {
	tb.Helper()
	url := testenv.RedisURL(tb)
	c := newClient(tb, url, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		testenv.Unavailable(tb, "redis at %s: %v", url, err)
	}
	prefix := testenv.KeyPrefix(tb) + "rl:"
	tb.Cleanup(func() {
		// Every bucket expires by itself, some only after an hour; a shared
		// server should not have to wait.
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return url, c, prefix
}

// deciderKinds builds each Redis-backed decider over client c with prefix;
// timeout bounds a Batcher's round trip.
var deciderKinds = []struct {
	name string
	make func(tb testing.TB, c Redis, prefix string, timeout time.Duration) Decider
}{
	{"naive", func(tb testing.TB, c Redis, prefix string, _ time.Duration) Decider {
		tb.Helper()
		r, err := NewRedisLimiter(RedisConfig{Client: c, Prefix: prefix})
		if err != nil {
			tb.Fatal(err)
		}
		return r
	}},
	{"batched", func(tb testing.TB, c Redis, prefix string, timeout time.Duration) Decider {
		tb.Helper()
		return newTestBatcher(tb, BatcherConfig{Client: c, Prefix: prefix, Timeout: timeout})
	}},
	{"pipelined", func(tb testing.TB, c Redis, prefix string, timeout time.Duration) Decider {
		tb.Helper()
		return newTestBatcher(tb, BatcherConfig{Client: c, Prefix: prefix, Timeout: timeout, PerKeyCalls: true})
	}},
	{"production", func(tb testing.TB, c Redis, prefix string, timeout time.Duration) Decider {
		tb.Helper()
		d, _ := newProductionStack(tb, c, prefix, timeout, FallbackConfig{Timeout: timeout})
		return d
	}},
}

// newProductionStack builds the stack the package doc recommends: an
// OverLimitCache in front of a Fallback whose primary is a Batcher. cfg
// configures the Fallback (its Primary is set here).
func newProductionStack(tb testing.TB, c Redis, prefix string, timeout time.Duration, cfg FallbackConfig) (Decider, *Fallback) {
	tb.Helper()
	cfg.Primary = newTestBatcher(tb, BatcherConfig{Client: c, Prefix: prefix, Timeout: timeout})
	f, err := NewFallback(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	o, err := NewOverLimitCache(OverLimitConfig{Next: f, Now: cfg.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return o, f
}

func newTestBatcher(tb testing.TB, cfg BatcherConfig) *Batcher {
	tb.Helper()
	b, err := NewBatcher(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// mustPolicy parses a policy or fails tb.
func mustPolicy(tb testing.TB, name, spec string) Policy {
	tb.Helper()
	p, err := ParsePolicy(name, spec)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// allow calls d.Allow with a generous deadline and fails tb on error.
func allow(tb testing.TB, d Decider, p Policy, key string, cost int64) Decision {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dec, err := d.Allow(ctx, p, key, cost)
	if err != nil {
		tb.Fatalf("Allow(%s, %q, %d): %v", p.Name, key, cost, err)
	}
	return dec
}

// warmUp polls d on a key of its own until Redis decides (directly or through
// a lease): a client's first call (a dial, the script loaded into a fresh
// Redis) may overrun a production-sized timeout on a loaded machine, and a
// test that counts breaker openings or leases must start from a warm one.
func warmUp(t *testing.T, d Decider, p Policy) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, "a decision from Redis within the client's timeout", func() bool {
		dec, err := d.Allow(context.Background(), p, "warm-up", 1)
		return err == nil && (dec.Source == SourceRedis || dec.Source == SourceLease)
	})
}

// fakeClock is a settable clock for LocalLimiter and Fallback.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testRecorder records what a Recorder is told.
type testRecorder struct {
	mu        sync.Mutex
	decisions map[string]int // "policy/decision" -> count
	errors    int
	fallback  []bool // every FallbackActive call, in order
}

func newTestRecorder() *testRecorder { return &testRecorder{decisions: map[string]int{}} }

func (r *testRecorder) Decision(policy, decision string) {
	r.mu.Lock()
	r.decisions[policy+"/"+decision]++
	r.mu.Unlock()
}

func (r *testRecorder) BackendError() {
	r.mu.Lock()
	r.errors++
	r.mu.Unlock()
}

func (r *testRecorder) FallbackActive(active bool) {
	r.mu.Lock()
	r.fallback = append(r.fallback, active)
	r.mu.Unlock()
}

func (r *testRecorder) snapshot() (map[string]int, int, []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.decisions))
	for k, v := range r.decisions {
		m[k] = v
	}
	return m, r.errors, append([]bool(nil), r.fallback...)
}

// deciderFunc adapts a function to Decider, for tests of the middleware and
// the fallback's state machine (Redis behaviour itself is tested on Redis).
type deciderFunc func(ctx context.Context, p Policy, key string, cost int64) (Decision, error)

func (f deciderFunc) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	return f(ctx, p, key, cost)
}
