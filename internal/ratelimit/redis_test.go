package ratelimit

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/testenv"
)

// within fails t unless lo <= got <= hi.
func within(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Fatalf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}

// bucketState reads a bucket hash: tokens (scaled) and ts (µs), and its PTTL.
func bucketState(t *testing.T, c *redis.Client, key string) (tokens, ts int64, pttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	v, err := c.HMGet(ctx, key, "t", "ts").Result()
	if err != nil {
		t.Fatalf("HMGET %s: %v", key, err)
	}
	for i, p := range []*int64{&tokens, &ts} {
		s, ok := v[i].(string)
		if !ok {
			t.Fatalf("HMGET %s: field %d is %v", key, i, v[i])
		}
		// Every digit must be there: no exponent, no fraction.
		if *p, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("HMGET %s: field %d %q is not an integer", key, i, s)
		}
	}
	if pttl, err = c.PTTL(ctx, key).Result(); err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return tokens, ts, pttl
}

// TestRedisExactSequence: the burst, then the (N+1)-th request denied with the
// right Retry-After, and the remaining counts and TTL the script stores.
func TestRedisExactSequence(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			d := kind.make(t, c, prefix+kind.name+":", 5*time.Second)
			p := mustPolicy(t, "create", "10/1m:3") // a token every 6s
			rkey := prefix + kind.name + ":{create:k}"
			start := time.Now()
			for i := int64(1); i <= 3; i++ {
				got := allow(t, d, p, "k", 1)
				if !got.Allowed || got.Remaining != 3-i || got.Limit != 3 || got.Source != SourceRedis || got.RetryAfter != 0 {
					t.Fatalf("request %d: %+v, want allowed with %d remaining", i, got, 3-i)
				}
				within(t, "Reset", got.Reset, time.Duration(i)*6*time.Second-time.Since(start), time.Duration(i)*6*time.Second)
				tokens, ts, pttl := bucketState(t, c, rkey)
				if tokens/60_000_000 != got.Remaining {
					t.Fatalf("request %d: stored %d scaled tokens (%d whole), decision says %d remaining",
						i, tokens, tokens/60_000_000, got.Remaining)
				}
				if now := time.Now().UnixMicro(); ts > now || ts < now-int64(10*time.Second/time.Microsecond) {
					t.Fatalf("stored ts %d µs is not Redis's current time (now %d)", ts, now)
				}
				within(t, "PTTL", pttl, got.Reset-time.Since(start)-time.Millisecond, got.Reset+time.Millisecond)
			}
			got := allow(t, d, p, "k", 1)
			if got.Allowed || got.Remaining != 0 {
				t.Fatalf("4th request: %+v, want denied with 0 remaining", got)
			}
			within(t, "RetryAfter", got.RetryAfter, 6*time.Second-time.Since(start), 6*time.Second)
			within(t, "Reset", got.Reset, 18*time.Second-time.Since(start), 18*time.Second)
		})
	}
}

// TestRedisRefill: after the computed Retry-After, and not before, the next
// request is allowed.
func TestRedisRefill(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			d := kind.make(t, c, prefix+kind.name+":", 5*time.Second)
			// A token every 250ms: a slower refill would only lengthen the
			// test; a faster one (50ms) could refill between the take and
			// the 3rd request when the machine stalls, allowing it.
			p := mustPolicy(t, "api", "4/1s:2")
			allow(t, d, p, "k", 2)
			before := time.Now()
			denied := allow(t, d, p, "k", 1)
			if denied.Allowed {
				t.Fatalf("3rd request allowed: %+v", denied)
			}
			within(t, "RetryAfter", denied.RetryAfter, time.Microsecond, 250*time.Millisecond)
			var allowed Decision
			testenv.WaitFor(t, 5*time.Second, "the refilled token", func() bool {
				allowed = allow(t, d, p, "k", 1)
				return allowed.Allowed
			})
			// Redis decided "denied" at or after before; the token could not
			// come sooner than RetryAfter after that (1ms for clock reading).
			if waited := time.Since(before); waited < denied.RetryAfter-time.Millisecond {
				t.Fatalf("allowed after %v, before the Retry-After of %v", waited, denied.RetryAfter)
			}
			// Polling may run late on a busy machine: a second token can have
			// arrived by then (one every 250 ms), never more than the burst.
			if allowed.Remaining > 1 {
				t.Fatalf("refilled decision %+v, want at most 1 remaining", allowed)
			}
		})
	}
}

// TestRedisCost: a cost above 1 takes that many tokens; a denied cost leaves
// the bucket as it was.
func TestRedisCost(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			d := kind.make(t, c, prefix+kind.name+":", 5*time.Second)
			p := mustPolicy(t, "api", "10/1m") // burst 10, a token every 6s
			start := time.Now()
			for i, w := range []struct {
				cost      int64
				allowed   bool
				remaining int64
				retry     time.Duration
			}{
				{4, true, 6, 0},
				{4, true, 2, 0},
				{4, false, 2, 12 * time.Second},
				{2, true, 0, 0},
				{10, false, 0, 60 * time.Second},
			} {
				got := allow(t, d, p, "k", w.cost)
				if got.Allowed != w.allowed || got.Remaining != w.remaining {
					t.Fatalf("step %d cost %d: %+v, want allowed=%v remaining=%d", i, w.cost, got, w.allowed, w.remaining)
				}
				within(t, "RetryAfter", got.RetryAfter, w.retry-time.Since(start), w.retry)
			}
		})
	}
}

// TestRedisMatchesLocal runs one sequence of costs through the script and
// through LocalLimiter (frozen clock) on a policy slow enough that no token
// refills meanwhile: the decisions agree, and the times differ by no more
// than the time that passed.
func TestRedisMatchesLocal(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	p := mustPolicy(t, "p", "7/1h:8")
	costs := []int64{1, 2, 3, 1, 5, 2, 1, 1, 8, 1}
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			d := kind.make(t, c, prefix+kind.name+":", 5*time.Second)
			local := NewLocalLimiter(LocalConfig{Now: newFakeClock().Now})
			start := time.Now()
			var longest time.Duration // the longest call to d so far
			for i, cost := range costs {
				called := time.Now()
				r := allow(t, d, p, "k", cost)
				longest = max(longest, time.Since(called))
				l := allow(t, local, p, "k", cost)
				if r.Allowed != l.Allowed || r.Remaining != l.Remaining || r.Limit != l.Limit {
					t.Fatalf("step %d cost %d: redis %+v, local %+v", i, cost, r, l)
				}
				// Redis's clock has moved on by at most the time since start.
				// A denial the OverLimitCache replays (production) is timed
				// from before the call that fetched it, so it can also be
				// short by that call's time up to Redis's decision (CI saw
				// 80µs): at most the longest call.
				slack := time.Since(start) + longest
				within(t, "redis RetryAfter", r.RetryAfter, l.RetryAfter-slack, l.RetryAfter)
				within(t, "redis Reset", r.Reset, l.Reset-slack, l.Reset)
			}
		})
	}
}

// TestRedisGlobalAccuracy: 4 independent limiter clients (separate go-redis
// clients and pools) × 200 goroutines on one key, 100 per hour with burst 100,
// 20 repetitions: exactly 100 admitted every time.
func TestRedisGlobalAccuracy(t *testing.T) {
	url, _, prefix := sharedRedis(t)
	p := mustPolicy(t, "create", "100/1h:100")
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			var deciders [4]Decider
			for i := range deciders {
				deciders[i] = kind.make(t, newClient(t, url, 10*time.Second), prefix+kind.name+":", 5*time.Second)
			}
			for rep := range 20 {
				key := "rep-" + strconv.Itoa(rep)
				var admitted, failed atomic.Int64
				var wg sync.WaitGroup
				start := make(chan struct{})
				for _, d := range deciders {
					for range 200 {
						wg.Go(func() {
							<-start
							ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
							defer cancel()
							dec, err := d.Allow(ctx, p, key, 1)
							switch {
							case err != nil:
								failed.Add(1)
								t.Error(err)
							case dec.Allowed:
								admitted.Add(1)
							}
						})
					}
				}
				close(start)
				wg.Wait()
				if n := admitted.Load(); n != 100 || failed.Load() != 0 {
					t.Fatalf("repetition %d: admitted %d of 800 (%d errors), want exactly 100", rep, n, failed.Load())
				}
			}
		})
	}
}

// TestRedisClockSkew: two limiters whose application clocks are 500ms ahead
// and 500ms behind share a bucket; together they admit no more than one
// limiter could, because the script reads only Redis's clock. (Were the app
// clock used, every alternation between them would look like a full second
// of refill, and nearly every request would pass.)
func TestRedisClockSkew(t *testing.T) {
	url, _, prefix := sharedRedis(t)
	p := mustPolicy(t, "create", "20/1s:2") // a token every 50ms
	var limiters []Decider
	for _, skew := range []time.Duration{500 * time.Millisecond, -500 * time.Millisecond} {
		primary := deciderKinds[0].make(t, newClient(t, url, 5*time.Second), prefix, 0)
		f, err := NewFallback(FallbackConfig{
			Primary: primary,
			Timeout: 5 * time.Second,
			Now:     func() time.Time { return time.Now().Add(skew) },
		})
		if err != nil {
			t.Fatal(err)
		}
		limiters = append(limiters, f)
	}
	var admitted, total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(time.Second)
	for i := range 4 {
		d := limiters[i%2]
		wg.Go(func() {
			for time.Now().Before(stop) {
				dec := allow(t, d, p, "shared", 1)
				if dec.Source != SourceRedis {
					t.Errorf("decision from %s, want redis", dec.Source)
					return
				}
				if dec.RetryAfter > 50*time.Millisecond || dec.Reset > 100*time.Millisecond {
					t.Errorf("skewed limiter reports RetryAfter %v Reset %v, beyond the policy's 50ms/100ms", dec.RetryAfter, dec.Reset)
				}
				total.Add(1)
				if dec.Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// One limiter admits at most the burst plus the refill over the run.
	bound := 2 + int64(elapsed/(50*time.Millisecond)) + 1
	t.Logf("skewed limiters admitted %d of %d in %v (bound %d)", admitted.Load(), total.Load(), elapsed, bound)
	if admitted.Load() > bound {
		t.Fatalf("admitted %d, more than a single limiter's %d", admitted.Load(), bound)
	}
	if total.Load() < 4*bound {
		t.Fatalf("only %d decisions: too few to show anything", total.Load())
	}
}

// TestRedisKeysExpire: after 100,000 distinct keys no bucket key lacks a
// TTL, and all are gone about one refill time (1s here) after their write.
func TestRedisKeysExpire(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	b, err := NewBatcher(BatcherConfig{Client: c, Prefix: prefix, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := mustPolicy(t, "redirect", "1/1s:1")
	const keys, workers, chunk = 100_000, 50, 100
	var wg sync.WaitGroup
	var noTTL, checked atomic.Int64
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for base := w * (keys / workers); base < (w+1)*(keys/workers); base += chunk {
				for i := base; i < base+chunk; i++ {
					if d, err := b.Allow(ctx, p, "ip-"+strconv.Itoa(i), 1); err != nil || !d.Allowed {
						t.Errorf("key %d: %+v %v", i, d, err)
						return
					}
				}
				pipe := c.Pipeline()
				ttls := make([]*redis.DurationCmd, chunk)
				for i := range chunk {
					ttls[i] = pipe.PTTL(ctx, prefix+"{redirect:ip-"+strconv.Itoa(base+i)+"}")
				}
				if _, err := pipe.Exec(ctx); err != nil {
					t.Errorf("PTTL: %v", err)
					return
				}
				for _, cmd := range ttls {
					// -1 would be a key without expiry; -2 (already gone) is fine.
					if v := cmd.Val(); v == -1 || v > time.Second {
						noTTL.Add(1)
					}
					checked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	written := time.Now()
	if noTTL.Load() != 0 || checked.Load() != keys {
		t.Fatalf("%d of %d keys checked have no TTL (or one above the 1s refill time)", noTTL.Load(), checked.Load())
	}
	count := func() int {
		n := 0
		iter := c.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
		for iter.Next(context.Background()) {
			n++
		}
		if err := iter.Err(); err != nil {
			t.Fatalf("SCAN: %v", err)
		}
		return n
	}
	testenv.WaitFor(t, 2*time.Second+2*time.Second, "all 100,000 bucket keys to expire", func() bool { return count() == 0 })
	t.Logf("100,000 keys written; all gone %v after the last write", time.Since(written).Round(time.Millisecond))
}

// TestRedisScriptFlush: SCRIPT FLUSH during load costs no decision an error;
// the NOSCRIPT replies are answered by EVAL.
func TestRedisScriptFlush(t *testing.T) {
	r := testenv.StartRedis(t) // private: flushing a shared server's scripts would disturb others
	c := newClient(t, r.URL(), 5*time.Second)
	admin := newClient(t, r.URL(), 5*time.Second)
	p := mustPolicy(t, "redirect", "1000000/1s")
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			ctx := context.Background()
			if err := admin.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			d := kind.make(t, c, "flush:"+kind.name+":", 5*time.Second)
			var decisions, failures, flushes atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := d.Allow(ctx, p, "k"+strconv.Itoa(g*1000+i%1000), 1); err != nil {
							failures.Add(1)
							t.Error(err)
						}
						decisions.Add(1)
					}
				})
			}
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				if err := admin.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				flushes.Add(1)
				n := decisions.Load()
				testenv.WaitFor(t, 5*time.Second, "decisions after a flush", func() bool { return decisions.Load() > n+20 })
			}
			close(stop)
			wg.Wait()
			info, err := admin.Info(ctx, "commandstats").Result()
			if err != nil {
				t.Fatal(err)
			}
			evals := commandCalls(info, "eval")
			t.Logf("%d decisions, %d SCRIPT FLUSHes, %d EVAL fallbacks, %d errors", decisions.Load(), flushes.Load(), evals, failures.Load())
			if failures.Load() != 0 {
				t.Fatalf("%d decisions failed during SCRIPT FLUSH", failures.Load())
			}
			if evals == 0 {
				t.Fatal("no EVAL ran: the flushes never hit a decision, the test showed nothing")
			}
		})
	}
}

// commandCalls reads calls=N of cmdstat_<name> from INFO commandstats.
func commandCalls(info, name string) int {
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+name+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		return n
	}
	return 0
}
