package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// want is an expected decision (Source local, Limit from the policy).
type want struct {
	allowed   bool
	remaining int64
	retry     time.Duration
	reset     time.Duration
}

func checkDecision(t *testing.T, step string, got Decision, p Policy, w want) {
	t.Helper()
	exp := Decision{Allowed: w.allowed, Limit: p.Burst, Remaining: w.remaining, RetryAfter: w.retry, Reset: w.reset, Source: SourceLocal}
	if got != exp {
		t.Fatalf("%s: got %+v, want %+v", step, got, exp)
	}
}

func TestLocalExactSequence(t *testing.T) {
	clock := newFakeClock()
	l := NewLocalLimiter(LocalConfig{Now: clock.Now})
	p := mustPolicy(t, "create", "10/1m:3") // one token every 6s

	checkDecision(t, "1st", allow(t, l, p, "k", 1), p, want{true, 2, 0, 6 * time.Second})
	checkDecision(t, "2nd", allow(t, l, p, "k", 1), p, want{true, 1, 0, 12 * time.Second})
	checkDecision(t, "3rd", allow(t, l, p, "k", 1), p, want{true, 0, 0, 18 * time.Second})
	checkDecision(t, "4th (N+1)", allow(t, l, p, "k", 1), p, want{false, 0, 6 * time.Second, 18 * time.Second})

	clock.Add(6*time.Second - time.Microsecond)
	checkDecision(t, "1µs early", allow(t, l, p, "k", 1), p, want{false, 0, time.Microsecond, 12*time.Second + time.Microsecond})
	clock.Add(time.Microsecond)
	checkDecision(t, "refilled", allow(t, l, p, "k", 1), p, want{true, 0, 0, 18 * time.Second})

	// Other keys and policies are independent.
	checkDecision(t, "other key", allow(t, l, p, "k2", 1), p, want{true, 2, 0, 6 * time.Second})
	q := p
	q.Name = "api"
	checkDecision(t, "other policy", allow(t, l, q, "k", 1), q, want{true, 2, 0, 6 * time.Second})

	// A full refill forgets the past.
	clock.Add(time.Hour)
	checkDecision(t, "after an hour", allow(t, l, p, "k", 1), p, want{true, 2, 0, 6 * time.Second})
}

func TestLocalCost(t *testing.T) {
	clock := newFakeClock()
	l := NewLocalLimiter(LocalConfig{Now: clock.Now})
	p := mustPolicy(t, "api", "10/1s") // one token every 100ms, burst 10

	checkDecision(t, "cost 4", allow(t, l, p, "k", 4), p, want{true, 6, 0, 400 * time.Millisecond})
	checkDecision(t, "cost 4 again", allow(t, l, p, "k", 4), p, want{true, 2, 0, 800 * time.Millisecond})
	checkDecision(t, "cost 4 denied", allow(t, l, p, "k", 4), p, want{false, 2, 200 * time.Millisecond, 800 * time.Millisecond})
	checkDecision(t, "cost 2 fits", allow(t, l, p, "k", 2), p, want{true, 0, 0, time.Second})
	checkDecision(t, "cost 10 denied", allow(t, l, p, "k", 10), p, want{false, 0, time.Second, time.Second})
	clock.Add(time.Second)
	checkDecision(t, "cost 10 after refill", allow(t, l, p, "k", 10), p, want{true, 0, 0, time.Second})
}

// TestLocalNoDrift takes tokens of a policy whose emission interval is not a
// whole number of microseconds (1h/7), each as soon as it is available: the
// seventh arrives exactly one hour later, not a rounding error more or less.
// (Burst 2 so that the sub-token remainders are never capped away by a full
// bucket.)
func TestLocalNoDrift(t *testing.T) {
	clock := newFakeClock()
	l := NewLocalLimiter(LocalConfig{Now: clock.Now})
	p := mustPolicy(t, "p", "7/1h:2")
	if d := allow(t, l, p, "k", 2); !d.Allowed {
		t.Fatal("burst denied")
	}
	var elapsed time.Duration
	for i := 1; i <= 7; i++ {
		d := allow(t, l, p, "k", 1)
		if d.Allowed {
			t.Fatalf("token %d allowed early", i)
		}
		clock.Add(d.RetryAfter - time.Microsecond)
		if allow(t, l, p, "k", 1).Allowed {
			t.Fatalf("token %d allowed 1µs before its Retry-After", i)
		}
		clock.Add(time.Microsecond)
		elapsed += d.RetryAfter
		if !allow(t, l, p, "k", 1).Allowed {
			t.Fatalf("token %d denied at its Retry-After", i)
		}
	}
	if elapsed != time.Hour {
		t.Fatalf("7 tokens took %v, want exactly 1h", elapsed)
	}
}

func TestLocalClockBackwards(t *testing.T) {
	clock := newFakeClock()
	l := NewLocalLimiter(LocalConfig{Now: clock.Now})
	p := mustPolicy(t, "p", "1/1s:1")
	allow(t, l, p, "k", 1)
	clock.Add(-time.Hour)
	if d := allow(t, l, p, "k", 1); d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("after the clock went back: %+v, want denied with the full second to wait", d)
	}
	clock.Add(time.Hour + time.Second)
	if d := allow(t, l, p, "k", 1); !d.Allowed {
		t.Fatalf("a second after the original take: %+v, want allowed", d)
	}
}

func TestLocalConcurrentExact(t *testing.T) {
	l := NewLocalLimiter(LocalConfig{}) // real clock: 100 per hour barely refills
	p := mustPolicy(t, "create", "100/1h:100")
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 400 {
		wg.Go(func() {
			<-start
			d, err := l.Allow(context.Background(), p, "one-key", 1)
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				admitted.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := admitted.Load(); n != 100 {
		t.Fatalf("admitted %d of 400, want exactly 100", n)
	}
}

// TestLocalNewPoliciesConcurrently races the first decisions of several
// policies (the copy-on-write table): a policy's table created twice, or one
// lost when another is added, would admit more than its burst.
func TestLocalNewPoliciesConcurrently(t *testing.T) {
	l := NewLocalLimiter(LocalConfig{}) // real clock: 10 per hour barely refills
	const policies, burst, tries = 8, 10, 50
	ps := make([]Policy, policies)
	for i := range ps {
		ps[i] = mustPolicy(t, "p"+strconv.Itoa(i), "10/1h:10")
	}
	var admitted [policies]atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range policies * tries {
		wg.Go(func() {
			<-start
			p := i % policies
			d, err := l.Allow(context.Background(), ps[p], "one-key", 1)
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				admitted[p].Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range admitted {
		if n := admitted[i].Load(); n != burst {
			t.Errorf("policy %s admitted %d of %d, want exactly %d", ps[i].Name, n, tries, burst)
		}
	}
	if n := l.Len(); n != policies {
		t.Errorf("Len = %d, want one bucket per policy (%d)", n, policies)
	}
}

// TestShardSizes: each shard's lock lies on its own 64-byte line.
func TestShardSizes(t *testing.T) {
	if n := unsafe.Sizeof(localShard{}); n != 64 {
		t.Errorf("localShard is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(leaseShard{}); n != 64 {
		t.Errorf("leaseShard is %d bytes, want 64", n)
	}
}

func TestLocalBoundedMemory(t *testing.T) {
	clock := newFakeClock()
	const maxKeys = 640
	l := NewLocalLimiter(LocalConfig{Now: clock.Now, MaxKeys: maxKeys})
	p := mustPolicy(t, "redirect", "10/1s")
	for i := range 20 * maxKeys {
		allow(t, l, p, "ip-"+strconv.Itoa(i), 1)
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys the limiter holds %d buckets, more than MaxKeys %d", i+1, n, maxKeys)
		}
	}
	// Full buckets go first: once every bucket has refilled, new keys evict
	// them and the recently used ones survive.
	clock.Add(time.Second)
	for i := range maxKeys / 2 {
		allow(t, l, p, "fresh-"+strconv.Itoa(i), 5)
	}
	for i := range maxKeys / 2 {
		allow(t, l, p, "new-"+strconv.Itoa(i), 1)
	}
	kept := 0
	for i := range maxKeys / 2 {
		if d := allow(t, l, p, "fresh-"+strconv.Itoa(i), 5); !d.Allowed || d.Remaining != 0 {
			continue // evicted: it started again from a full bucket
		}
		kept++
	}
	// Each shard holds 10; an arbitrary (non-full) eviction can only happen
	// in a shard that received more than 10 keys of the 640 drained ones.
	if kept < maxKeys/4 {
		t.Fatalf("only %d of %d drained buckets survived the insertion of %d new keys; full buckets should be evicted first",
			kept, maxKeys/2, maxKeys/2)
	}
}

// TestLocalCopiesKey checks that a key backed by a reused buffer (as Fiber's
// c.IP() may be) is copied before it is stored.
func TestLocalCopiesKey(t *testing.T) {
	clock := newFakeClock()
	l := NewLocalLimiter(LocalConfig{Now: clock.Now})
	p := mustPolicy(t, "p", "1/1h:2")
	buf := []byte("10.0.0.1")
	allow(t, l, p, unsafe.String(&buf[0], len(buf)), 1)
	copy(buf, "10.0.0.2")
	if d := allow(t, l, p, "10.0.0.1", 1); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("10.0.0.1 second request: %+v, want allowed with 0 remaining (its bucket kept its key)", d)
	}
}

// TestLocalKnownKeyDoesNotAllocate: a decision on a key already held
// allocates nothing; only a new key's bucket is allocated. (The bucket used
// to escape on every decision: one allocation per redirect.)
func TestLocalKnownKeyDoesNotAllocate(t *testing.T) {
	l := NewLocalLimiter(LocalConfig{})
	p := mustPolicy(t, "redirect", "100000000/1s:100000000")
	ctx := context.Background()
	if _, err := l.Allow(ctx, p, "ip:192.0.2.1", 1); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if d, err := l.Allow(ctx, p, "ip:192.0.2.1", 1); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decision on a known key, want 0", allocs)
	}
}
