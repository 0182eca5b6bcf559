package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/testenv"
)

// 1. First Resolve reads the source, the second is an L1 hit, and a second
// instance on the same Redis gets an L2 hit.
func TestResolveHitMiss(t *testing.T) {
	want := testLink("abc1234")
	src := newSource(want)
	a, b, ra, rb := sharedPair(t, src, nil)

	mustResolve(t, a, want.Code, want)
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads after first resolve = %d, want 1", n)
	}
	l1 := mustResolve(t, a, want.Code, want)
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads after L1 hit = %d, want 1", n)
	}
	if l2 := mustResolve(t, a, want.Code, want); l2 != l1 {
		t.Fatalf("L1 hits returned different targets: %+v, %+v", l1, l2)
	}
	mustResolve(t, b, want.Code, want)
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads after L2 hit on B = %d, want 1", n)
	}
	mustResolve(t, b, want.Code, want)

	wantCounts(t, "A", ra, map[string]int{"lru/miss": 1, "lru/hit": 2, "redis/miss": 1, "store/hit": 1})
	wantCounts(t, "B", rb, map[string]int{"lru/miss": 1, "lru/hit": 1, "redis/hit": 1})
	if a.Len() != 1 || b.Len() != 1 || a.NegativeLen() != 0 {
		t.Fatalf("Len A=%d B=%d NegativeLen A=%d, want 1 1 0", a.Len(), b.Len(), a.NegativeLen())
	}
}

// 2. 500 concurrent resolves of one uncached code make exactly one source read.
func TestResolveStampede(t *testing.T) {
	const n = 500
	want := testLink("hot0001")
	src := newSource(want)
	rec := newRecorder()
	c := newCache(t, Config{Source: src, Redis: redisClient(t, testenv.RedisURL(t)),
		KeyPrefix: testenv.KeyPrefix(t), Recorder: rec, RedisTimeout: testRedisTimeout})

	var entered atomic.Int64
	allIn := make(chan struct{})
	// The source holds the load until every goroutine has called Resolve.
	src.setBlock(func(string) {
		select {
		case <-allIn:
		case <-time.After(20 * time.Second):
		}
	})
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			if entered.Add(1) == n {
				close(allIn)
			}
			l, err := c.Resolve(context.Background(), want.Code)
			if err == nil && (l.URL != want.URL || l.Code != want.Code) {
				err = fmt.Errorf("wrong link %+v", l)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := src.reads.Load(); got != 1 {
		t.Fatalf("source reads = %d, want 1", got)
	}
	if got := rec.get(LayerStore, ResultHit) + rec.get(LayerRedis, ResultHit); got != 1 {
		t.Fatalf("loads = %d, want 1", got)
	}
	if got := rec.get(LayerLRU, ResultMiss) + rec.get(LayerLRU, ResultHit); got != n {
		t.Fatalf("lru lookups = %d, want %d", got, n)
	}
	t.Logf("lru misses (callers that joined the load) = %d, lru hits = %d",
		rec.get(LayerLRU, ResultMiss), rec.get(LayerLRU, ResultHit))
}

// 3. Unknown codes are cached as negative entries in both tiers; creating
// one (Invalidate) makes it resolvable at once on A and soon on B.
func TestNegativeEntries(t *testing.T) {
	const n = 10_000
	src := newSource()
	a, b, ra, rb := sharedPair(t, src, func(c *Config) {
		c.NegativeTTL = time.Minute // the scans must not outlive the entries
	})
	codes := make([]string, n)
	for i := range codes {
		codes[i] = fmt.Sprintf("scan%05d", i)
	}
	scan := func() {
		t.Helper()
		const workers = 8
		var wg sync.WaitGroup
		var bad atomic.Int64
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					if _, err := a.Resolve(context.Background(), codes[i]); !isNotFound(err) {
						bad.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("%d resolves of unknown codes did not give ENOTFOUND", bad.Load())
		}
	}
	t0 := time.Now()
	scan()
	t1 := time.Now()
	scan()
	t.Logf("first scan %v, second scan %v", t1.Sub(t0), time.Since(t1))
	if got := src.reads.Load(); got > n {
		t.Fatalf("source reads after two scans = %d, want <= %d", got, n)
	}
	if got := ra.get(LayerLRU, ResultNegativeHit); got != n {
		t.Fatalf("second scan lru negative hits = %d, want %d", got, n)
	}
	if a.NegativeLen() != n || a.Len() != 0 {
		t.Fatalf("A NegativeLen=%d Len=%d, want %d 0", a.NegativeLen(), a.Len(), n)
	}

	// B learns the negative entry from L2, without a source read.
	code := codes[1234]
	reads := src.reads.Load()
	mustNotFound(t, b, code)
	if src.reads.Load() != reads || rb.get(LayerRedis, ResultNegativeHit) != 1 {
		t.Fatalf("B's first resolve: source reads +%d, redis negative hits %d; want +0, 1",
			src.reads.Load()-reads, rb.get(LayerRedis, ResultNegativeHit))
	}
	mustNotFound(t, b, code)
	if rb.get(LayerLRU, ResultNegativeHit) != 1 {
		t.Fatal("B's second resolve was not an L1 negative hit")
	}

	// Create it: the store first, then the caches.
	want := testLink(code)
	src.put(want)
	if err := a.Invalidate(t.Context(), code); err != nil {
		t.Fatal(err)
	}
	mustResolve(t, a, code, want)
	d, ok := pollFor(time.Second, func() bool {
		_, err := b.Resolve(context.Background(), code)
		return err == nil
	})
	if !ok {
		t.Fatal("B still answers not-found 1 s after the code was created")
	}
	t.Logf("created code visible on B after %v", d)
	mustResolve(t, b, code, want)
}

// Negative entries end after NegativeTTL in both tiers, without Invalidate.
func TestNegativeEntryExpires(t *testing.T) {
	src := newSource()
	// A second, not less: the two resolves below must fall within one TTL.
	a, _, _, _ := sharedPair(t, src, func(c *Config) { c.NegativeTTL = time.Second })
	mustNotFound(t, a, "later01")
	mustNotFound(t, a, "later01")
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads = %d, want 1", n)
	}
	want := testLink("later01")
	src.put(want) // no Invalidate: only the TTL can end the negative entries
	testenv.WaitFor(t, 5*time.Second, "negative entry to expire", func() bool {
		_, err := a.Resolve(context.Background(), "later01")
		return err == nil
	})
	mustResolve(t, a, "later01", want)
}

// 4. Deleting on A reaches B's L1 within a second; 50 rounds.
func TestInvalidateAcrossInstances(t *testing.T) {
	const rounds = 50
	src := newSource()
	a, b, _, _ := sharedPair(t, src, nil)
	delays := make([]time.Duration, 0, rounds)
	for i := range rounds {
		want := testLink(fmt.Sprintf("del%04d", i))
		src.put(want)
		mustResolve(t, a, want.Code, want)
		mustResolve(t, b, want.Code, want)
		if !b.l1.contains(want.Code) {
			t.Fatal("B did not cache the link in L1")
		}
		src.del(want.Code)
		start := time.Now()
		if err := a.Invalidate(t.Context(), want.Code); err != nil {
			t.Fatal(err)
		}
		if _, ok := pollFor(time.Second, func() bool {
			_, err := b.Resolve(context.Background(), want.Code)
			return isNotFound(err)
		}); !ok {
			t.Fatalf("round %d: B still resolves %s 1 s after the delete", i, want.Code)
		}
		delays = append(delays, time.Since(start))
		mustNotFound(t, a, want.Code)
	}
	t.Logf("delete on A -> not-found on B over %d rounds: p50 %v, p99 %v, max %v",
		rounds, percentile(delays, 50), percentile(delays, 99), percentile(delays, 100))
}

// 5. With Redis killed, resolves keep working from L1 and the source, with
// errors counted; after a restart L2 and the subscription come back by
// themselves and the subscriber has cleared L1.
func TestRedisKilledAndRestarted(t *testing.T) {
	r := testenv.StartRedis(t)
	k1, k2, k3 := testLink("kill001"), testLink("kill002"), testLink("kill003")
	src := newSource(k1, k2, k3)
	ra, rb := newRecorder(), newRecorder()
	// While Redis is down every L1 miss costs up to RedisTimeout (go-redis
	// retries the dial until the deadline), so keep it short but roomy.
	const timeout = 250 * time.Millisecond
	a := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL()), Recorder: ra, RedisTimeout: timeout})
	b := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL()), Recorder: rb, RedisTimeout: timeout})
	startRun(t, a)
	startRun(t, b)
	mustResolve(t, a, k1.Code, k1)
	mustResolve(t, b, k1.Code, k1)
	mustResolve(t, b, k3.Code, k3)
	if b.Len() != 2 {
		t.Fatalf("B: Len %d, want 2", b.Len())
	}

	r.Kill()
	readsBefore := src.reads.Load()
	for _, step := range []struct {
		code string
		want *links.Link
	}{
		{k1.Code, &k1},   // L1
		{k2.Code, &k2},   // source
		{"kill404", nil}, // source, negative in L1 only
		{"kill404", nil}, // L1
	} {
		start := time.Now()
		if step.want != nil {
			mustResolve(t, a, step.code, *step.want)
		} else {
			mustNotFound(t, a, step.code)
		}
		if d := time.Since(start); d > timeout+500*time.Millisecond {
			t.Fatalf("Resolve(%q) with Redis down took %v", step.code, d)
		}
	}
	if got := src.reads.Load() - readsBefore; got != 2 {
		t.Fatalf("source reads with Redis down = %d, want 2", got)
	}
	if got := ra.get(LayerRedis, ResultError); got < 2 {
		t.Fatalf("redis errors counted on A = %d, want >= 2", got)
	}
	if err := a.Invalidate(t.Context(), k2.Code); err == nil {
		t.Fatal("Invalidate with Redis down returned nil")
	}
	if a.l1.contains(k2.Code) {
		t.Fatal("a failed Invalidate left the code in L1")
	}

	r.Start()
	testenv.WaitFor(t, 15*time.Second, "B to resubscribe and clear its L1", func() bool {
		return b.subscriptions.Load() >= 2 && b.Len() == 0
	})
	testenv.WaitFor(t, 15*time.Second, "A to resubscribe and retry its failed invalidation", func() bool {
		a.pendingMu.Lock()
		defer a.pendingMu.Unlock()
		return a.subscriptions.Load() >= 2 && len(a.pending) == 0
	})

	// L2 hits resume on the same Cache values.
	i := 0
	testenv.WaitFor(t, 10*time.Second, "L2 hits on B", func() bool {
		i++
		l := testLink(fmt.Sprintf("back%03d", i))
		src.put(l)
		if _, err := a.Resolve(context.Background(), l.Code); err != nil {
			return false
		}
		hits := rb.get(LayerRedis, ResultHit)
		reads := src.reads.Load()
		_, err := b.Resolve(context.Background(), l.Code)
		return err == nil && rb.get(LayerRedis, ResultHit) == hits+1 && src.reads.Load() == reads
	})

	// The subscription is back: a delete on A reaches B. (A's retried
	// invalidation of k2 is published before its pending entry is dropped,
	// but B's Run may evict it only now; an eviction during B's load of k3
	// keeps k3 out of L1, so the load is repeated until k3 is cached.)
	testenv.WaitFor(t, 10*time.Second, "B to cache k3 in L1", func() bool {
		mustResolve(t, b, k3.Code, k3)
		return b.l1.contains(k3.Code)
	})
	src.del(k3.Code)
	if err := a.Invalidate(t.Context(), k3.Code); err != nil {
		t.Fatal(err)
	}
	if _, ok := pollFor(time.Second, func() bool { return !b.l1.contains(k3.Code) }); !ok {
		t.Fatal("the invalidation did not reach B after the restart")
	}
	mustNotFound(t, b, k3.Code)
}

// 6. A Redis that accepts connections and never answers costs each call
// RedisTimeout, not go-redis's 5 s ReadTimeout.
func TestRedisTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, cn) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, cn := range conns {
			cn.Close()
		}
	})
	rc := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rc.Close() })

	const timeout = 50 * time.Millisecond
	const slack = 450 * time.Millisecond // scheduling under -race on 2 cores
	want := testLink("slow001")
	src := newSource(want)
	rec := newRecorder()
	c := newCache(t, Config{Source: src, Redis: rc, RedisTimeout: timeout, Recorder: rec})

	for _, tc := range []struct {
		code  string
		found bool
	}{{want.Code, true}, {"slow404", false}} {
		start := time.Now()
		l, err := c.Resolve(t.Context(), tc.code)
		d := time.Since(start)
		if tc.found && err != nil || !tc.found && !isNotFound(err) {
			t.Fatalf("Resolve(%q) = %v, %v", tc.code, l, err)
		}
		t.Logf("Resolve(%q) with a silent Redis took %v", tc.code, d)
		if d < timeout || d > timeout+slack {
			t.Fatalf("Resolve(%q) took %v, want about %v", tc.code, d, timeout)
		}
	}
	if got := rec.get(LayerRedis, ResultError); got != 2 {
		t.Fatalf("redis errors = %d, want 2 (one read per resolve, no write after a failed read)", got)
	}
	start := time.Now()
	if err := c.Invalidate(t.Context(), want.Code); err == nil {
		t.Fatal("Invalidate against a silent Redis returned nil")
	}
	if d := time.Since(start); d > timeout+slack {
		t.Fatalf("Invalidate took %v", d)
	}
}

// 7. A link cached in both tiers is still returned after its ExpiresAt, and
// Expired reports it, so the service answers 410 rather than 404 or a redirect.
func TestExpiredLinkStillReturned(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	want := testLink("exp0001")
	want.ExpiresAt = now().Add(time.Minute)
	src := newSource(want)
	a, b, _, rb := sharedPair(t, src, func(c *Config) { c.Now = now })

	if l := mustResolve(t, a, want.Code, want); l.Expired(now()) {
		t.Fatal("link expired before its ExpiresAt")
	}
	if l := mustResolve(t, b, want.Code, want); l.Expired(now()) || rb.get(LayerRedis, ResultHit) != 1 {
		t.Fatal("B's L2 hit is expired or was not an L2 hit")
	}
	clock.Add(int64(2 * time.Minute))
	for name, c := range map[string]*Cache{"A (L1)": a, "B (L1)": b} {
		if l := mustResolve(t, c, want.Code, want); !l.Expired(now()) {
			t.Fatalf("%s: link past ExpiresAt not reported as expired", name)
		}
	}
	c := newCache(t, Config{Source: src, Redis: a.cfg.Redis, KeyPrefix: a.cfg.KeyPrefix, Now: now,
		RedisTimeout: testRedisTimeout})
	if l := mustResolve(t, c, want.Code, want); !l.Expired(now()) {
		t.Fatal("fresh instance (L2): link past ExpiresAt not reported as expired")
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads = %d, want 1", n)
	}
}

// A load that read the store before a change and finishes after the change's
// Invalidate must not write what it read back into L1 or L2.
func TestLoadRacingInvalidateDoesNotWriteBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before bool // whether the link exists when the load reads it
	}{
		{"deleted during load", true},
		{"created during load", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := testLink("race001")
			src := newSource()
			if tc.before {
				src.put(want)
			}
			a, b, _, _ := sharedPair(t, src, nil)
			inLoad, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			src.setBlock(func(string) {
				once.Do(func() { close(inLoad) })
				<-release
			})
			type result struct {
				l   links.Target
				err error
			}
			done := make(chan result, 1)
			go func() {
				l, err := a.Resolve(context.Background(), want.Code)
				done <- result{l, err}
			}()
			<-inLoad // the load has read the source
			if tc.before {
				src.del(want.Code)
			} else {
				src.put(want)
			}
			if err := a.Invalidate(t.Context(), want.Code); err != nil {
				t.Fatal(err)
			}
			src.setBlock(nil)
			close(release)
			r := <-done
			if tc.before && r.err != nil || !tc.before && !isNotFound(r.err) {
				t.Fatalf("racing Resolve = %v, %v (it reads before the change)", r.l, r.err)
			}

			if a.l1.contains(want.Code) || a.l1neg.contains(want.Code) {
				t.Fatal("the racing load wrote into L1")
			}
			rc := a.cfg.Redis.(*redis.Client)
			if v, err := rc.Get(t.Context(), a.linkKey(want.Code)).Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("the racing load wrote into L2: %q, %v", v, err)
			}
			for _, c := range []*Cache{a, b} {
				if tc.before {
					mustNotFound(t, c, want.Code)
				} else {
					mustResolve(t, c, want.Code, want)
				}
			}
		})
	}
}

// An Invalidate that Redis fails is retried by Run once Redis answers again.
func TestFailedInvalidateIsRetried(t *testing.T) {
	r := testenv.StartRedis(t)
	want := testLink("retry01")
	src := newSource(want)
	a := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL())})
	b := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL())})
	startRun(t, a)
	startRun(t, b)
	mustResolve(t, a, want.Code, want)
	mustResolve(t, b, want.Code, want)
	admin := redisClient(t, r.URL())

	src.del(want.Code)
	// Scripts and PUBLISH block while writes are paused; reads go on.
	if err := admin.Do(t.Context(), "CLIENT", "PAUSE", "800", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Invalidate(t.Context(), want.Code); err == nil {
		t.Fatal("Invalidate during CLIENT PAUSE WRITE returned nil")
	}
	if !b.l1.contains(want.Code) {
		t.Fatal("B lost the link although the invalidation failed")
	}
	// The timed-out script itself may run once the pause lifts, evicting B
	// and L2 before Run's next retry (up to a second later) clears the
	// pending entry, so all three are awaited together.
	testenv.WaitFor(t, 10*time.Second, "the retried invalidation to reach B and L2 and leave nothing pending", func() bool {
		if b.l1.contains(want.Code) {
			return false
		}
		a.pendingMu.Lock()
		left := len(a.pending)
		a.pendingMu.Unlock()
		if left != 0 {
			return false
		}
		n, err := admin.Exists(context.Background(), a.linkKey(want.Code)).Result()
		return err == nil && n == 0
	})
	mustNotFound(t, b, want.Code)
}

// Without Redis the cache is an LRU with negative entries in front of the source.
func TestLRUOnly(t *testing.T) {
	want := testLink("solo001")
	src := newSource(want)
	rec := newRecorder()
	c := newCache(t, Config{Source: src, Recorder: rec})
	mustResolve(t, c, want.Code, want)
	mustResolve(t, c, want.Code, want)
	mustNotFound(t, c, "solo404")
	mustNotFound(t, c, "solo404")
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("source reads = %d, want 2", n)
	}
	wantCounts(t, "lru-only", rec, map[string]int{
		"lru/hit": 1, "lru/miss": 2, "lru/negative_hit": 1, "store/hit": 1, "store/miss": 1,
	})
	src.del(want.Code)
	if err := c.Invalidate(t.Context(), want.Code); err != nil {
		t.Fatal(err)
	}
	mustNotFound(t, c, want.Code)

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	testenv.WaitFor(t, 5*time.Second, "Run to start", c.running.Load)
	if err := c.Run(ctx); err == nil {
		t.Fatal("a second concurrent Run returned nil")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
}

// Close stops Run, empties L1 and may be repeated; Resolve still works after.
func TestClose(t *testing.T) {
	want := testLink("close01")
	src := newSource(want)
	c, err := New(Config{Source: src, Redis: redisClient(t, testenv.RedisURL(t)), KeyPrefix: testenv.KeyPrefix(t),
		RedisTimeout: testRedisTimeout})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	testenv.WaitFor(t, 10*time.Second, "subscription", func() bool { return c.subscriptions.Load() >= 1 })
	mustResolve(t, c, want.Code, want)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run after Close = %v", err)
	}
	if c.Len() != 0 {
		t.Fatalf("Len after Close = %d", c.Len())
	}
	mustResolve(t, c, want.Code, want) // from L2
	mustResolve(t, c, want.Code, want)
	if c.Len() != 0 || src.reads.Load() != 1 {
		t.Fatalf("after Close: Len %d, source reads %d; want 0, 1 (L2 still serves, L1 stays empty)",
			c.Len(), src.reads.Load())
	}
}

// Source faults are returned, wrapped, and not cached.
func TestSourceErrorNotCached(t *testing.T) {
	want := testLink("fail001")
	src := newSource(want)
	rec := newRecorder()
	c := newCache(t, Config{Source: src, Recorder: rec})
	src.setFail(errBoom)
	for range 2 {
		_, err := c.Resolve(t.Context(), want.Code)
		if !errors.Is(err, errBoom) || links.ErrorCode(err) != links.EINTERNAL {
			t.Fatalf("Resolve = %v, want wrapped errBoom", err)
		}
	}
	if n := src.reads.Load(); n != 2 || rec.get(LayerStore, ResultError) != 2 {
		t.Fatalf("source reads %d, store errors %d; want 2, 2", n, rec.get(LayerStore, ResultError))
	}
	src.setFail(nil)
	mustResolve(t, c, want.Code, want)
}

// A caller whose context ends stops waiting; the load it joined goes on and
// fills the cache for the others.
func TestResolveCallerGivesUp(t *testing.T) {
	want := testLink("wait001")
	src := newSource(want)
	c := newCache(t, Config{Source: src})
	inLoad, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src.setBlock(func(string) { once.Do(func() { close(inLoad) }); <-release })

	first := make(chan error, 1)
	go func() {
		_, err := c.Resolve(context.Background(), want.Code)
		first <- err
	}()
	<-inLoad
	ctx, cancel := context.WithCancel(t.Context())
	second := make(chan error, 1)
	go func() {
		_, err := c.Resolve(ctx, want.Code)
		second <- err
	}()
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Resolve = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	mustResolve(t, c, want.Code, want)
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads = %d, want 1", n)
	}
}

// Resolve copies the code before keeping it, so a borrowed string (Fiber's
// c.Params) whose bytes are reused does not corrupt the cache.
func TestResolveCopiesBorrowedCode(t *testing.T) {
	want := testLink("borrow1")
	src := newSource(want)
	c := newCache(t, Config{Source: src}) // no L2 to paper over a broken L1 key
	for _, code := range []string{want.Code, "nothere"} {
		buf := []byte(code)
		borrowed := unsafe.String(&buf[0], len(buf))
		_, _ = c.Resolve(t.Context(), borrowed)
		copy(buf, "XXXXXXX") // the request buffer is reused
	}
	reads := src.reads.Load()
	mustResolve(t, c, want.Code, want)
	mustNotFound(t, c, "nothere")
	if src.reads.Load() != reads {
		t.Fatal("the cached keys changed with the borrowed buffer")
	}
	if k, nk := c.l1.keys(), c.l1neg.keys(); !slices.Equal(k, []string{want.Code}) || !slices.Equal(nk, []string{"nothere"}) {
		t.Fatalf("L1 keys = %q, negative keys = %q", k, nk)
	}
}

// Codes longer than maxCodeLen are not cached.
func TestLongCodesNotCached(t *testing.T) {
	src := newSource()
	c := newCache(t, Config{Source: src, Redis: redisClient(t, testenv.RedisURL(t)), KeyPrefix: testenv.KeyPrefix(t)})
	long := string(make([]byte, maxCodeLen+1))
	mustNotFound(t, c, long)
	mustNotFound(t, c, long)
	if n := src.reads.Load(); n != 2 || c.NegativeLen() != 0 {
		t.Fatalf("source reads %d, NegativeLen %d; want 2, 0", n, c.NegativeLen())
	}
}

func TestNewConfig(t *testing.T) {
	src := newSource()
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Source returned nil error")
	}
	if _, err := New(Config{Source: src, LRUTTL: -time.Second}); err == nil {
		t.Fatal("New with a negative TTL returned nil error")
	}
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rc.Close() })
	if _, err := New(Config{Source: src, Redis: rc}); err == nil {
		t.Fatal("New accepted a client without ContextTimeoutEnabled")
	}
	var typedNil *redis.Client
	c := newCache(t, Config{Source: src, Redis: typedNil})
	if c.cfg.Redis != nil {
		t.Fatal("a typed-nil client was not treated as no Redis")
	}
	d := c.cfg
	if d.LRUSize != 100_000 || d.LRUTTL != 5*time.Minute || d.RedisTTL != time.Hour ||
		d.NegativeTTL != 5*time.Second || d.RedisTimeout != 50*time.Millisecond ||
		d.KeyPrefix != "lg:" || d.Channel != "lg:invalidate" || d.Logger == nil || d.Now == nil || d.Recorder == nil {
		t.Fatalf("defaults = %+v", d)
	}
	if got := c.linkKey("abc"); got != "lg:link:abc" {
		t.Fatalf("link key = %q", got)
	}
	mustNotFound(t, c, "nothing")
}

// An invalidation still pending when Run's context ends (shutdown) gets one
// last try: here periodic retries are an hour apart, so only the final pass
// can reach Redis and B. A's Redis timeout is 500ms, not the 50ms default:
// the last try is a single attempt on a fresh connection (the timed-out one
// was dropped), and the pause (3s) must outlast the Invalidate it fails.
func TestPendingInvalidationRetriedAtExit(t *testing.T) {
	r := testenv.StartRedis(t)
	want := testLink("exit001")
	src := newSource(want)
	a := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL()), RetryInterval: time.Hour,
		RedisTimeout: 500 * time.Millisecond})
	b := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL())})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	testenv.WaitFor(t, 10*time.Second, "A's subscription", func() bool { return a.subscriptions.Load() >= 1 })
	startRun(t, b)
	mustResolve(t, b, want.Code, want)
	admin := redisClient(t, r.URL())

	src.del(want.Code)
	if err := admin.Do(t.Context(), "CLIENT", "PAUSE", "3000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Invalidate(t.Context(), want.Code); err == nil {
		t.Fatal("Invalidate during CLIENT PAUSE WRITE returned nil")
	}
	// Wait for the pause to end: a write goes through again.
	testenv.WaitFor(t, 10*time.Second, "the pause to end", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		return admin.Set(ctx, testenv.KeyPrefix(t)+"probe", "1", time.Minute).Err() == nil
	})
	a.pendingMu.Lock()
	pending := len(a.pending)
	a.pendingMu.Unlock()
	if pending != 1 || !b.l1.contains(want.Code) {
		t.Fatalf("before the exit: %d pending on A, B holds the code: %v; want 1 and true", pending, b.l1.contains(want.Code))
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	a.pendingMu.Lock()
	pending = len(a.pending)
	a.pendingMu.Unlock()
	if pending != 0 {
		t.Fatalf("%d invalidations still pending after Run returned", pending)
	}
	if n, err := admin.Exists(t.Context(), a.linkKey(want.Code)).Result(); err != nil || n != 0 {
		t.Fatalf("L2 still holds the code after the exit retry: %d %v", n, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the published invalidation to reach B", func() bool { return !b.l1.contains(want.Code) })
	mustNotFound(t, b, want.Code)
}

// roundTrips is a go-redis hook counting what reaches Redis: single
// commands and pipelines, with the largest pipeline seen.
type roundTrips struct {
	singles, pipelines, largest atomic.Int64
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.singles.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		for {
			old := h.largest.Load()
			if int64(len(cmds)) <= old || h.largest.CompareAndSwap(old, int64(len(cmds))) {
				break
			}
		}
		return next(ctx, cmds)
	}
}

// Concurrent invalidations share round trips: while the first is held in
// flight (Redis paused for writes), the others queue and go out as one
// pipeline. Every one still deletes its code from L2, bumps its generation
// and reaches the other instance's L1.
func TestConcurrentInvalidationsShareRoundTrips(t *testing.T) {
	r := testenv.StartRedis(t)
	const n = 32
	ls := make([]links.Link, n)
	for i := range ls {
		ls[i] = testLink(fmt.Sprintf("grp%04d", i))
	}
	src := newSource(ls...)
	client := redisClient(t, r.URL())
	hook := &roundTrips{}
	client.AddHook(hook)
	a := newCache(t, Config{Source: src, Redis: client, RedisTimeout: 5 * time.Second})
	b := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL())})
	startRun(t, b)
	for _, l := range ls {
		mustResolve(t, b, l.Code, l) // L1 of B and L2
	}
	admin := redisClient(t, r.URL())
	for _, l := range ls {
		src.del(l.Code)
	}
	if err := admin.Do(t.Context(), "CLIENT", "PAUSE", "300", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	singles, pipelines := hook.singles.Load(), hook.pipelines.Load()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			if err := a.Invalidate(context.Background(), l.Code); err != nil {
				t.Errorf("Invalidate(%s): %v", l.Code, err)
			}
		})
	}
	wg.Wait()
	trips := hook.singles.Load() - singles + hook.pipelines.Load() - pipelines
	if trips >= n || hook.largest.Load() < 2 {
		t.Fatalf("%d invalidations took %d round trips (largest pipeline %d): they did not share them",
			n, trips, hook.largest.Load())
	}
	for _, l := range ls {
		if k, err := admin.Exists(t.Context(), a.linkKey(l.Code)).Result(); err != nil || k != 0 {
			t.Fatalf("L2 still holds %s: %d %v", l.Code, k, err)
		}
		if g, err := admin.Get(t.Context(), a.genKey(l.Code)).Int64(); err != nil || g < 1 {
			t.Fatalf("generation of %s = %d %v, want >= 1", l.Code, g, err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "every invalidation to reach B", func() bool { return b.Len() == 0 })
	t.Logf("%d invalidations in %d round trips, largest pipeline %d", n, trips, hook.largest.Load())
}

// A pipeline of invalidations whose EVALSHA finds the script cache flushed
// sends them again with EVAL.
func TestPipelinedInvalidationsAfterScriptFlush(t *testing.T) {
	r := testenv.StartRedis(t)
	codes := []string{"flush01", "flush02", "flush03"}
	src := newSource()
	a := newCache(t, Config{Source: src, Redis: redisClient(t, r.URL()), RedisTimeout: testRedisTimeout})
	admin := redisClient(t, r.URL())
	for _, code := range codes {
		if err := admin.Set(t.Context(), a.linkKey(code), "x", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	for i, err := range a.runInvalidations(t.Context(), codes) {
		if err != nil {
			t.Fatalf("%s: %v", codes[i], err)
		}
	}
	for _, code := range codes {
		if k, _ := admin.Exists(t.Context(), a.linkKey(code)).Result(); k != 0 {
			t.Fatalf("L2 still holds %s", code)
		}
	}
}
