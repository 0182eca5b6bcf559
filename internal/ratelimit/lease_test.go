package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/linkgate/linkgate/internal/testenv"
)

// leaseNext is the Fallback under a Leaser, counting the calls that reach
// it (all, and those asking for more than one token: leases). Embedding
// the *Fallback keeps its Active method visible to the Leaser.
type leaseNext struct {
	*Fallback
	calls, multi atomic.Int64
}

func (n *leaseNext) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	n.calls.Add(1)
	if cost > 1 {
		n.multi.Add(1)
	}
	return n.Fallback.Allow(ctx, p, key, cost)
}

// newLeaseStack builds the redirect policy's production stack over client
// c: Leaser → Fallback → Batcher, with the counting wrapper between the
// Leaser and the Fallback. timeout bounds the Batcher's round trips and,
// unless fc sets its own, the Fallback's calls.
func newLeaseStack(tb testing.TB, c Redis, prefix string, timeout time.Duration, lc LeaseConfig, fc FallbackConfig) (*Leaser, *leaseNext) {
	tb.Helper()
	fc.Primary = newTestBatcher(tb, BatcherConfig{Client: c, Prefix: prefix, Timeout: timeout})
	if fc.Timeout == 0 {
		fc.Timeout = timeout
	}
	f, err := NewFallback(fc)
	if err != nil {
		tb.Fatal(err)
	}
	next := &leaseNext{Fallback: f}
	lc.Next = next
	l, err := NewLeaser(lc)
	if err != nil {
		tb.Fatal(err)
	}
	return l, next
}

// inLeaseEntry calls f with l's entry for p and key (nil if none), under
// its shard's lock.
func inLeaseEntry(l *Leaser, p Policy, key string, f func(e *leaseEntry)) {
	s := &l.shards[maphash.String(l.seed, key)%localShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.m[leaseKey{p: p, key: key}])
}

// leaseHeld is the number of usable tokens l holds for p and key.
func leaseHeld(l *Leaser, p Policy, key string) (n int64) {
	now := l.clock()
	inLeaseEntry(l, p, key, func(e *leaseEntry) {
		if e != nil {
			n = e.held(now)
		}
	})
	return n
}

// leaseFetching reports whether l is asking Next for a lease for key.
func leaseFetching(l *Leaser, p Policy, key string) (fetching bool) {
	inLeaseEntry(l, p, key, func(e *leaseEntry) { fetching = e != nil && e.fetching })
	return fetching
}

// leaseEntries is the number of keys l remembers.
func leaseEntries(l *Leaser) int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// TestLeaserGlobalAccuracy: 4 independent stacks (separate go-redis clients
// and pools) × 200 goroutines on one key, 100 per hour with burst 100, L=16,
// 20 repetitions. Leased tokens are taken from the bucket before they are
// spent, so no more than 100 are ever admitted.
//
// With one request per goroutine, the tokens still held in leases at the
// end are not admitted: every token taken is either admitted or held
// (admitted + held = 100 exactly, as 800 requests drain the bucket), and
// held is at most 4×(L−1). When every goroutine keeps asking until it is
// denied, no instance is left holding tokens (a request is denied only when
// its instance holds none, and only a live request fetches), so exactly 100
// are admitted, as with the exact limiter.
func TestLeaserGlobalAccuracy(t *testing.T) {
	url, _, prefix := sharedRedis(t)
	p := mustPolicy(t, "redirect", "100/1h:100")
	p.FailOpen = true // as in production: Redis trouble would show as Source none
	const stacks, goroutines, reps, size = 4, 200, 20, 16
	for _, mode := range []struct {
		name        string
		untilDenied bool
	}{{"one request each", false}, {"until denied", true}} {
		t.Run(mode.name, func(t *testing.T) {
			var leasers [stacks]*Leaser
			var nexts [stacks]*leaseNext
			for i := range stacks {
				leasers[i], nexts[i] = newLeaseStack(t, newClient(t, url, 10*time.Second), prefix, 5*time.Second,
					LeaseConfig{Size: size, MaxAge: time.Hour}, FallbackConfig{})
			}
			var admittedPerRep []int64
			var decisions atomic.Int64
			for rep := range reps {
				key := strconv.FormatBool(mode.untilDenied) + "-" + strconv.Itoa(rep)
				var admitted atomic.Int64
				var wg sync.WaitGroup
				start := make(chan struct{})
				for _, l := range leasers {
					for range goroutines {
						wg.Go(func() {
							<-start
							ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
							defer cancel()
							for {
								d, err := l.Allow(ctx, p, key, 1)
								decisions.Add(1)
								switch {
								case err != nil:
									t.Error(err)
									return
								case d.Source != SourceRedis && d.Source != SourceLease:
									t.Errorf("decision %+v not from redis or a lease", d)
									return
								case !d.Allowed:
									return
								}
								admitted.Add(1)
								if !mode.untilDenied {
									return
								}
							}
						})
					}
				}
				close(start)
				wg.Wait()
				// A lease taken ahead (once half of a lease of 8 or more is
				// spent) may still be in flight with no request waiting for
				// it: its tokens may already be gone from the bucket but not
				// yet held, so the count waits for it to land.
				for _, l := range leasers {
					testenv.WaitFor(t, 10*time.Second, "the key's last fetch", func() bool { return !leaseFetching(l, p, key) })
				}
				var held int64
				for _, l := range leasers {
					held += leaseHeld(l, p, key)
				}
				n := admitted.Load()
				admittedPerRep = append(admittedPerRep, n)
				switch {
				case n > p.Burst:
					t.Fatalf("repetition %d: admitted %d, more than the burst of %d", rep, n, p.Burst)
				case n+held != p.Burst:
					t.Fatalf("repetition %d: admitted %d + %d still leased, want %d (every token taken is admitted or held)",
						rep, n, held, p.Burst)
				case held > stacks*(size-1):
					t.Fatalf("repetition %d: %d tokens left in leases, more than 4×(L−1)", rep, held)
				case mode.untilDenied && n != p.Burst:
					t.Fatalf("repetition %d: admitted %d with demand on every instance, want exactly %d", rep, n, p.Burst)
				}
			}
			var calls, multi int64
			for _, n := range nexts {
				calls, multi = calls+n.calls.Load(), multi+n.multi.Load()
			}
			t.Logf("admitted per repetition: %v; %d decisions, %d reached the Fallback (%d of them leases)",
				admittedPerRep, decisions.Load(), calls, multi)
		})
	}
}

// TestLeaserWindowBound: 4 stacks share one key of a 1000/1s policy with
// burst 100. First each stack admits a few requests, until it holds 15
// leased tokens; once the bucket has refilled (its key expires when full), 8
// goroutines per stack hammer it for 2s: the first window then sees the
// worst case, a full bucket plus 4×15 leased tokens. Every admission is
// timestamped (start and end of its Allow call, since t0, taken before any
// request). Checked:
//
//   - Cumulatively, at every admission, admitted ≤ Burst + rate×(end − t0)
//     (+2 for rounding and clock rates): tokens are taken before they are
//     spent, so leases never over-admit in total.
//   - In every 100ms window [a, a+100ms) starting at an admission,
//     admitted ≤ B(a) + rate×100ms + 4×(L−1) + S(a) + 2. B(a) = min(Burst,
//     Burst + rate×a − admitted before a) bounds the bucket's content at a,
//     so B(a) + rate×100ms bounds what the exact bucket could grant in the
//     window; 4×(L−1) bounds the tokens the instances hold in leases at a;
//     S(a) counts the requests decided by Redis itself that were in flight
//     at a (their token may have been taken just before a: the exact
//     limiter has the same lag). The looser bound with Burst for B(a) is
//     checked too.
//   - Overall, admitted ≤ Burst + rate×duration + 4×(L−1), and during the
//     hammer at least half of what the exact bucket grants in it.
func TestLeaserWindowBound(t *testing.T) {
	url, c, prefix := sharedRedis(t)
	p := mustPolicy(t, "redirect", "1000/1s:100")
	p.FailOpen = true
	const stacks, perStack, size = 4, 8, 16
	const hammer, window = 2 * time.Second, 100 * time.Millisecond
	var leasers [stacks]*Leaser
	var nexts [stacks]*leaseNext
	for i := range stacks {
		leasers[i], nexts[i] = newLeaseStack(t, newClient(t, url, 10*time.Second), prefix, 5*time.Second,
			LeaseConfig{Size: size, MaxAge: 5 * time.Second}, FallbackConfig{})
	}
	var mu sync.Mutex
	var admissions []admission
	var decisions atomic.Int64
	t0 := time.Now()
	record := func(l *Leaser) (bool, error) {
		s := time.Since(t0)
		d, err := l.Allow(context.Background(), p, "hammer", 1)
		e := time.Since(t0)
		decisions.Add(1)
		if err != nil || (d.Source != SourceRedis && d.Source != SourceLease) {
			return false, fmt.Errorf("decision %+v, %v: want one from redis or a lease", d, err)
		}
		if d.Allowed {
			mu.Lock()
			admissions = append(admissions, admission{start: s, end: e, leased: d.Source == SourceLease})
			mu.Unlock()
		}
		return d.Allowed, nil
	}
	full := func() bool { return c.Exists(context.Background(), prefix+"{redirect:hammer}").Val() == 0 }
	for _, l := range leasers {
		// Leases grow with demand (1, 4, 10 tokens, then one taken ahead
		// that tops the holding up to 15): a few requests make the
		// instance hold 15. The bucket refills in between.
		for i := 0; leaseHeld(l, p, "hammer") != size-1; i++ {
			if ok, err := record(l); !ok || err != nil || i == 50 {
				t.Fatalf("warm-up request %d: allowed %v, %v, holding %d", i, ok, err, leaseHeld(l, p, "hammer"))
			}
			testenv.WaitFor(t, 5*time.Second, "the lease taken ahead", func() bool { return !leaseFetching(l, p, "hammer") })
		}
		testenv.WaitFor(t, 5*time.Second, "the bucket to refill", full)
	}
	hammerStart := time.Since(t0)
	var wg sync.WaitGroup
	for _, l := range leasers {
		for range perStack {
			wg.Go(func() {
				for time.Since(t0) < hammerStart+hammer {
					if _, err := record(l); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	duration := time.Since(t0)
	slices.SortFunc(admissions, func(a, b admission) int { return int(a.end - b.end) })
	grant := func(d time.Duration) int64 { return int64(d) * p.Limit / int64(p.Period) } // whole tokens refilled in d
	slack := int64(stacks * (size - 1))

	for i, a := range admissions {
		if n, limit := int64(i+1), p.Burst+grant(a.end)+2; n > limit {
			t.Fatalf("%d admitted by %v, more than the bucket can ever grant by then (%d)", n, a.end, limit)
		}
	}
	var worst, worstIn int64 = -1 << 62, 0 // largest admitted − (B(a) + rate×w), and its count
	var worstAt time.Duration
	for _, w := range admissions {
		a, b := w.end, w.end+window
		before := endedBefore(admissions, a)
		in := endedBefore(admissions, b) - before
		exact := min(p.Burst, p.Burst+grant(a)-before) + grant(window)
		var straddle int64
		for _, x := range admissions {
			if !x.leased && x.start < a && x.end >= a {
				straddle++
			}
		}
		if in > exact+slack+straddle+2 {
			t.Fatalf("window [%v, %v): %d admitted; the exact bucket could grant at most %d, leases add at most %d, in flight at %v: %d",
				a, b, in, exact, slack, a, straddle)
		}
		if in > p.Burst+grant(window)+slack+straddle+2 {
			t.Fatalf("window [%v, %v): %d admitted, above Burst + rate×w + 4×(L−1) + in flight (%d)", a, b, in, straddle)
		}
		if in-exact > worst {
			worst, worstIn, worstAt = in-exact, in, a
		}
	}
	total := int64(len(admissions))
	exact := p.Burst + grant(duration)
	if total > exact+slack {
		t.Fatalf("admitted %d in %v, above Burst + rate×duration + 4×(L−1) = %d", total, duration, exact+slack)
	}
	// Liveness over the hammer alone: the warm-up admits a handful while
	// its time (long on a slow machine) would count toward exact; the
	// bucket is full when the hammer starts.
	var hammered int64
	for _, a := range admissions {
		if a.start >= hammerStart {
			hammered++
		}
	}
	if possible := p.Burst + grant(duration-hammerStart); hammered < possible/2 {
		t.Fatalf("admitted only %d in the %v of the hammer; the exact bucket grants up to %d", hammered, duration-hammerStart, possible)
	}
	var calls int64
	for _, n := range nexts {
		calls += n.calls.Load()
	}
	t.Logf("admitted %d of %d decisions in %v (the exact bucket: at most %d); %d reached the Fallback; "+
		"worst 100ms window: %d admitted from %v, %d over the exact bound (leases allow %d + in flight)",
		total, decisions.Load(), duration.Round(time.Millisecond), exact, calls, worstIn, worstAt.Round(time.Microsecond), worst, slack)
}

// admission is one admitted request of TestLeaserWindowBound: when its
// Allow call started and ended (since t0), and whether a leased token
// admitted it.
type admission struct {
	start, end time.Duration
	leased     bool
}

// endedBefore is the number of admissions (sorted by end) that ended before d.
func endedBefore(xs []admission, d time.Duration) int64 {
	n, _ := slices.BinarySearchFunc(xs, d, func(x admission, d time.Duration) int {
		if x.end < d {
			return -1
		}
		return 1
	})
	return int64(n)
}

// TestLeaserExactNearExhaustion: with a burst (5) below the lease size (16),
// the Leaser admits exactly what the exact limiter admits, reports the same
// Remaining, then denies with a Retry-After, remembering the denial instead
// of asking Redis again. Two instances alternating on one client also get
// exactly the first 5 requests through: leases of at most half the
// estimated tokens leave the other instance some.
func TestLeaserExactNearExhaustion(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	p := mustPolicy(t, "redirect", "1/1h:5")
	p.FailOpen = true
	l, next := newLeaseStack(t, c, prefix, 5*time.Second, LeaseConfig{Size: 16, MaxAge: time.Hour}, FallbackConfig{})
	for i := range int64(5) {
		d := allow(t, l, p, "one", 1)
		if !d.Allowed || d.Remaining != 4-i || d.Limit != 5 || d.RetryAfter != 0 || d.Reset <= 0 {
			t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, d, 4-i)
		}
	}
	first := allow(t, l, p, "one", 1)
	if first.Allowed || first.RetryAfter <= 0 || first.RetryAfter > time.Hour || first.Source != SourceRedis {
		t.Fatalf("6th request: %+v, want denied by redis with a Retry-After", first)
	}
	calls := next.calls.Load()
	prev := first.RetryAfter
	for i := range 20 {
		d := allow(t, l, p, "one", 1)
		if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > prev || d.Remaining != 0 || d.Source != SourceRedis {
			t.Fatalf("denial %d: %+v (previous Retry-After %v)", i, d, prev)
		}
		prev = d.RetryAfter
	}
	if n := next.calls.Load(); n != calls {
		t.Fatalf("remembered denials reached the Fallback: %d calls, want %d", n, calls)
	}
	t.Logf("one instance: %d calls to the Fallback for 5 admissions and 21 denials", calls)
	if calls > 6 {
		t.Fatalf("%d calls to the Fallback for 6 decisions", calls)
	}

	other, _ := newLeaseStack(t, c, prefix, 5*time.Second, LeaseConfig{Size: 16, MaxAge: time.Hour}, FallbackConfig{})
	instances := []*Leaser{l, other}
	var got []bool
	for i := range 12 {
		got = append(got, allow(t, instances[i%2], p, "two", 1).Allowed)
	}
	if want := []bool{true, true, true, true, true, false, false, false, false, false, false, false}; !equalBools(got, want) {
		t.Fatalf("alternating instances: allowed %v, want %v", got, want)
	}
}

// TestLeaserRedisDown: with Redis killed, the fail-open policy keeps
// allowing (Source none) and nothing is leased: the fresh keys hold no
// tokens, and once the breaker is open no lease is even asked for. Tokens
// leased before the outage are still spent. After Redis returns, leasing
// resumes.
func TestLeaserRedisDown(t *testing.T) {
	r := testenv.StartRedis(t)
	c := newClient(t, r.URL(), 50*time.Millisecond) // the default timeouts throughout
	l, next := newLeaseStack(t, c, "down:", 0, LeaseConfig{}, FallbackConfig{OpenTimeout: 50 * time.Millisecond})
	p := mustPolicy(t, "redirect", "1000000/1s")
	p.FailOpen = true

	warmUp(t, l, p)             // a cold first call could fail open
	allow(t, l, p, "before", 1) // a new key's first request takes one token
	if d := allow(t, l, p, "before", 1); !d.Allowed || d.Source != SourceRedis || leaseHeld(l, p, "before") != 3 {
		t.Fatalf("healthy: %+v with %d leased, want a redis decision and a lease of 4", d, leaseHeld(l, p, "before"))
	}
	r.Kill()
	if d := allow(t, l, p, "before", 1); !d.Allowed || d.Source != SourceLease {
		t.Fatalf("leased token while Redis is down: %+v, want it spent (Source lease)", d)
	}
	down := func(i int) string { return "down-" + strconv.Itoa(i%20) }
	for i := range 100 {
		if d := allow(t, l, p, down(i), 1); !d.Allowed || d.Source != SourceNone {
			t.Fatalf("request %d with Redis down: %+v, want allowed unchecked", i, d)
		}
	}
	testenv.WaitFor(t, 5*time.Second, "the breaker to open", next.Active)
	multi := next.multi.Load()
	for i := range 100 {
		if d := allow(t, l, p, down(i), 1); !d.Allowed || d.Source != SourceNone {
			t.Fatalf("request %d with the breaker open: %+v, want allowed unchecked", i, d)
		}
	}
	for i := range 20 {
		if n := leaseHeld(l, p, down(i)); n != 0 {
			t.Fatalf("%s holds %d leased tokens while Redis is down", down(i), n)
		}
	}
	if n := next.multi.Load(); n != multi && next.Active() {
		t.Fatalf("%d leases asked for while the breaker was open", n-multi)
	}

	r.Start()
	i := 0
	testenv.WaitFor(t, 6*time.Second, "leasing to resume", func() bool {
		i++
		key := "after-" + strconv.Itoa(i)
		// Two Redis decisions (a new key's lease ramp: 1 token, then 4),
		// then tokens spent from the lease.
		if allow(t, l, p, key, 1).Source != SourceRedis {
			return false
		}
		if allow(t, l, p, key, 1).Source != SourceRedis {
			return false
		}
		return leaseHeld(l, p, key) == 3 && allow(t, l, p, key, 1).Source == SourceLease
	})
}

// TestLeaserMaxAge: leased tokens are spent until MaxAge after the call
// that took them and dropped from then on; the next request takes a new
// lease, sized to what the last one served, and the dropped token is gone
// from the bucket (Redis's Remaining shows it taken).
func TestLeaserMaxAge(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	clock := newFakeClock()
	l, next := newLeaseStack(t, c, prefix, 5*time.Second,
		LeaseConfig{Size: 4, MaxAge: time.Second, Now: clock.Now}, FallbackConfig{})
	p := mustPolicy(t, "redirect", "1000/1h:1000")
	check := func(step string, d Decision, source string, remaining, calls, held int64) {
		t.Helper()
		if !d.Allowed || d.Source != source || d.Remaining != remaining || d.Limit != 1000 || d.RetryAfter != 0 ||
			next.calls.Load() != calls || leaseHeld(l, p, "k") != held {
			t.Fatalf("%s: %+v after %d calls, holding %d; want Source %s, %d remaining, %d calls, %d held",
				step, d, next.calls.Load(), leaseHeld(l, p, "k"), source, remaining, calls, held)
		}
	}
	check("first request (one token)", allow(t, l, p, "k", 1), SourceRedis, 999, 1, 0)
	check("second request (a lease of 4)", allow(t, l, p, "k", 1), SourceRedis, 998, 2, 3)
	check("leased", allow(t, l, p, "k", 1), SourceLease, 997, 2, 2)
	clock.Add(time.Second - time.Nanosecond)
	check("just before MaxAge", allow(t, l, p, "k", 1), SourceLease, 996, 2, 1)
	clock.Add(time.Nanosecond)
	if n := leaseHeld(l, p, "k"); n != 0 {
		t.Fatalf("%d tokens usable at MaxAge, want none", n)
	}
	// The expired lease served 3 requests: the next takes 3 tokens. Redis
	// has given 1 + 4 + 3 = 8, one of them dropped: 992 left there, 2 held.
	check("at MaxAge (a new lease of 3)", allow(t, l, p, "k", 1), SourceRedis, 992+2, 3, 2)
}

// TestLeaserSlowClientSpread: a client whose requests are spread over 4
// instances, each seeing fewer than two per MaxAge, is decided exactly: no
// instance strands a lease, so all 100 tokens of a 100/1h bucket are
// admitted and the 101st request is denied. (Leasing 16 tokens to each
// instance at once would have stranded 4×15 of them.)
func TestLeaserSlowClientSpread(t *testing.T) {
	url, _, prefix := sharedRedis(t)
	clock := newFakeClock()
	p := mustPolicy(t, "redirect", "100/1h:100")
	var leasers [4]*Leaser
	var nexts [4]*leaseNext
	for i := range leasers {
		leasers[i], nexts[i] = newLeaseStack(t, newClient(t, url, 5*time.Second), prefix, 5*time.Second,
			LeaseConfig{Now: clock.Now}, FallbackConfig{})
	}
	for i := range 101 {
		d := allow(t, leasers[i%4], p, "slow", 1)
		if d.Allowed != (i < 100) {
			t.Fatalf("request %d: %+v; want the first 100 allowed, then denied", i+1, d)
		}
		clock.Add(300 * time.Millisecond) // each instance sees one request per 1.2s
	}
	var multi int64
	for _, n := range nexts {
		multi += n.multi.Load()
	}
	if multi != 0 {
		t.Fatalf("%d leases of more than one token for a client sending each instance less than one request per MaxAge", multi)
	}
}

// TestLeaserCollapsesFetches: 64 goroutines on a fresh key do not each ask
// Redis: one asks, the others queue and share the next leases. A new lease
// is only asked for once the previous one is spent (queued requests are
// handed tokens directly, so none is taken ahead here), and leases grow 1,
// 4, 10, 16 at the slowest (faster with a queue), so 64 decisions cost at
// most 7 calls (1 + 4×16 when all arrive at once).
func TestLeaserCollapsesFetches(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	l, next := newLeaseStack(t, c, prefix, 5*time.Second, LeaseConfig{Size: 16, MaxAge: time.Minute}, FallbackConfig{})
	p := mustPolicy(t, "redirect", "1000/1h:1000")
	var perRep []int64
	for rep := range 10 {
		key := "fresh-" + strconv.Itoa(rep)
		before := next.calls.Load()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 64 {
			wg.Go(func() {
				<-start
				if d := allow(t, l, p, key, 1); !d.Allowed {
					t.Errorf("denied: %+v", d)
				}
			})
		}
		close(start)
		wg.Wait()
		// A lease taken ahead (once half of a lease of 8 or more is spent)
		// may still be in flight: let it land in this repetition's count.
		testenv.WaitFor(t, 10*time.Second, "the key's last fetch", func() bool { return !leaseFetching(l, p, key) })
		calls := next.calls.Load() - before
		perRep = append(perRep, calls)
		// All 64 queued behind the first call: 5 calls (1 token, then leases
		// of 16). However the scheduler spreads them, the demand ramp (1, 2,
		// 4, 8, 16, 16...) serves 64 in 8, and leases taken ahead (some
		// smaller than 16, one perhaps unused) add a few: under a loaded
		// CI run 8 was seen. Without collapsing it would be 64.
		if calls > 12 {
			t.Fatalf("repetition %d: 64 concurrent decisions made %d calls, want at most 12", rep, calls)
		}
	}
	t.Logf("calls per 64 concurrent decisions: %v", perRep)
}

// TestLeaserWaiters: requests waiting for another's fetch ask Next for
// themselves, for one token, when that fetch brings no Redis decision, or
// when their ctx ends first; they never fail for want of a lease. (A fake
// Next in a synctest bubble: what is tested is who calls Next, and when.)
func TestLeaserWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustPolicy(t, "redirect", "1000/1h:1000")
		release := make(chan struct{})
		var calls atomic.Int64
		// The first call blocks until released and then fails; later
		// ones answer as a Fallback does with Redis down and the policy
		// failing open.
		next := deciderFunc(func(ctx context.Context, p Policy, _ string, cost int64) (Decision, error) {
			if calls.Add(1) == 1 {
				<-release
				return Decision{}, errors.New("redis: connection refused")
			}
			if cost != 1 {
				t.Errorf("a waiter asked for %d tokens", cost)
			}
			return Decision{Allowed: true, Limit: p.Burst, Source: SourceNone}, nil
		})
		l, err := NewLeaser(LeaseConfig{Next: next})
		if err != nil {
			t.Fatal(err)
		}
		leader := make(chan error, 1)
		go func() { _, err := l.Allow(context.Background(), p, "k", 1); leader <- err }()
		synctest.Wait() // the leader is blocked in its call

		// A waiter whose ctx ends is decided by Next on its own.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if d, err := l.Allow(ctx, p, "k", 1); err != nil || !d.Allowed || d.Source != SourceNone || calls.Load() != 2 {
			t.Fatalf("waiter past its deadline: %+v, %v after %d calls; want Next's own answer", d, err, calls.Load())
		}
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if d := allow(t, l, p, "k", 1); !d.Allowed || d.Source != SourceNone {
					t.Errorf("waiter: %+v, want Next's fail-open answer", d)
				}
			})
		}
		synctest.Wait() // the 10 are waiting for the leader's fetch
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls while the fetch is in flight, want 2", n)
		}
		close(release)
		wg.Wait()
		if err := <-leader; err == nil {
			t.Fatal("leader: no error from the failed call")
		}
		if n := calls.Load(); n != 12 {
			t.Fatalf("%d calls, want 12: the failed fetch, the expired waiter and 10 waiters on their own", n)
		}
		if n := leaseHeld(l, p, "k"); n != 0 {
			t.Fatalf("%d tokens leased from non-Redis decisions", n)
		}
	})
}

// TestLeaserReleasesBurstQueue: a key's queue grows with a burst of
// waiters (up to 4×Size) and is released once the burst has been served,
// so a hot key does not keep a burst-sized slice until it is swept.
func TestLeaserReleasesBurstQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustPolicy(t, "redirect", "100000/1h:100000")
		release := make(chan struct{})
		var calls atomic.Int64
		next := deciderFunc(func(_ context.Context, p Policy, _ string, cost int64) (Decision, error) {
			if calls.Add(1) == 1 {
				<-release
			}
			return Decision{Allowed: true, Limit: p.Burst, Remaining: p.Burst - cost, Source: SourceRedis}, nil
		})
		l, err := NewLeaser(LeaseConfig{Next: next, Size: 256})
		if err != nil {
			t.Fatal(err)
		}
		const waiters = 300
		var wg sync.WaitGroup
		for range waiters + 1 {
			wg.Go(func() {
				if d := allow(t, l, p, "k", 1); !d.Allowed {
					t.Errorf("denied: %+v", d)
				}
			})
		}
		synctest.Wait() // one in Next, the others queued behind it
		queued := 0
		inLeaseEntry(l, p, "k", func(e *leaseEntry) { queued = len(e.queue) })
		if queued != waiters {
			t.Fatalf("%d queued behind the first fetch, want %d", queued, waiters)
		}
		close(release)
		wg.Wait()
		synctest.Wait() // a lease taken ahead lands
		inLeaseEntry(l, p, "k", func(e *leaseEntry) {
			if len(e.queue) != 0 || cap(e.queue) > leaseQueueKeep {
				t.Fatalf("after the burst the queue has length %d, capacity %d; want it empty and at most %d kept",
					len(e.queue), cap(e.queue), leaseQueueKeep)
			}
		})
	})
}

// TestLeaserTakesAhead: a busy key asks for its next lease once half of the
// current one is spent, and its requests go on spending the rest while that
// call is in flight: none waits for it unless the key runs dry first. The
// instance never holds more than Size−1 tokens. (A fake bucket in a
// synctest bubble, so that the lease taken ahead can be held in flight: a
// request that waited for it would block the bubble, which synctest reports
// as a deadlock.)
func TestLeaserTakesAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustPolicy(t, "redirect", "1000/1h:1000")
		var mu sync.Mutex
		var costs []int64
		left := int64(1000)
		var gate chan struct{} // when set, the next call waits for it
		next := deciderFunc(func(ctx context.Context, p Policy, _ string, cost int64) (Decision, error) {
			mu.Lock()
			costs = append(costs, cost)
			g := gate
			gate = nil
			mu.Unlock()
			if g != nil {
				<-g
			}
			mu.Lock()
			defer mu.Unlock()
			if cost > left {
				return Decision{Limit: p.Burst, Remaining: left, RetryAfter: time.Second, Source: SourceRedis}, nil
			}
			left -= cost
			return Decision{Allowed: true, Limit: p.Burst, Remaining: left, Source: SourceRedis}, nil
		})
		const size = 16
		l, err := NewLeaser(LeaseConfig{Next: next, Size: size})
		if err != nil {
			t.Fatal(err)
		}
		step := func(i int, want string) {
			t.Helper()
			d := allow(t, l, p, "k", 1)
			if !d.Allowed || d.Source != want {
				t.Fatalf("request %d: %+v, want allowed from %s", i, d, want)
			}
			if n := leaseHeld(l, p, "k"); n > size-1 {
				t.Fatalf("request %d: holding %d tokens, more than Size-1", i, n)
			}
		}
		// Leases of 1, 4 and 10 tokens (twice the demand shown), each
		// asked for by the request that found none left.
		step(1, SourceRedis)
		step(2, SourceRedis)
		for i := 3; i <= 5; i++ {
			step(i, SourceLease)
		}
		step(6, SourceRedis)
		// 9 held; the 4th of them leaves 5, half the lease: the next lease
		// is asked for then, for 15−5 = 10 tokens, and held in flight.
		for i := 7; i <= 9; i++ {
			step(i, SourceLease)
		}
		release := make(chan struct{})
		mu.Lock()
		gate = release
		mu.Unlock()
		step(10, SourceLease)
		synctest.Wait()
		if !leaseFetching(l, p, "k") {
			t.Fatal("no lease asked for ahead with half of the last one spent")
		}
		// The 5 tokens left are spent without waiting for it.
		for i := 11; i <= 15; i++ {
			step(i, SourceLease)
		}
		// The key has run dry: the next request waits for the lease.
		done := make(chan Decision, 1)
		go func() { done <- allow(t, l, p, "k", 1) }()
		synctest.Wait()
		select {
		case d := <-done:
			t.Fatalf("request 16 decided with no tokens held and the lease in flight: %+v", d)
		default:
		}
		close(release)
		if d := <-done; !d.Allowed || d.Source != SourceLease {
			t.Fatalf("request 16: %+v, want a token of the lease taken ahead", d)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if want := []int64{1, 4, 10, 10}; !slices.Equal(costs, want) {
			t.Fatalf("Next asked for %v tokens, want %v", costs, want)
		}
		if held := leaseHeld(l, p, "k"); held != 9 || left != 1000-25 {
			t.Fatalf("holding %d with %d left in the bucket; want 9 and %d (25 taken, 16 spent)", held, left, 1000-25)
		}
	})
}

// TestLeaserPassesThrough: costs above 1 and disabled policies go to Next
// unchanged and leave the lease alone; invalid requests are refused.
func TestLeaserPassesThrough(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	l, next := newLeaseStack(t, c, prefix, 5*time.Second, LeaseConfig{MaxAge: time.Hour}, FallbackConfig{})
	p := mustPolicy(t, "api", "100/1h:100")
	allow(t, l, p, "k", 1)
	allow(t, l, p, "k", 1) // a lease of 4
	if d := allow(t, l, p, "k", 3); !d.Allowed || d.Source != SourceRedis || d.Remaining != 100-5-3 || next.calls.Load() != 3 {
		t.Fatalf("cost 3: %+v after %d calls, want redis's decision with %d remaining", d, next.calls.Load(), 100-5-3)
	}
	if n := leaseHeld(l, p, "k"); n != 3 {
		t.Fatalf("lease holds %d after a cost-3 request, want 3", n)
	}
	off := Policy{Name: "off", Disabled: true}
	if d := allow(t, l, off, "k", 1); !d.Allowed || d.Source != SourceNone {
		t.Fatalf("disabled policy: %+v", d)
	}
	if _, err := l.Allow(context.Background(), Policy{Name: "Bad"}, "k", 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid policy: %v, want ErrInvalid", err)
	}
	if _, err := l.Allow(context.Background(), p, "k", 101); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cost above burst: %v, want ErrInvalid", err)
	}
	if _, err := NewLeaser(LeaseConfig{}); err == nil {
		t.Fatal("NewLeaser without Next: no error")
	}
}

// TestLeaserBoundedMemory: however many keys pass, at most MaxKeys are
// remembered.
func TestLeaserBoundedMemory(t *testing.T) {
	redis := deciderFunc(func(_ context.Context, p Policy, _ string, cost int64) (Decision, error) {
		return Decision{Allowed: true, Limit: p.Burst, Remaining: p.Burst - cost, Source: SourceRedis}, nil
	})
	l, err := NewLeaser(LeaseConfig{Next: redis, MaxKeys: 640})
	if err != nil {
		t.Fatal(err)
	}
	p := mustPolicy(t, "redirect", "1000/1h:1000")
	for i := range 10_000 {
		allow(t, l, p, "ip-"+strconv.Itoa(i), 1)
		if n := leaseEntries(l); i%100 == 0 && n > 640 {
			t.Fatalf("after %d keys the leaser holds %d, more than MaxKeys 640", i+1, n)
		}
	}
	if n := leaseEntries(l); n > 640 {
		t.Fatalf("leaser holds %d keys, more than MaxKeys 640", n)
	}
}

// TestLeaserCopiesKey checks that a key backed by a reused buffer (as
// Fiber's c.IP() may be) is copied before it is stored.
func TestLeaserCopiesKey(t *testing.T) {
	_, c, prefix := sharedRedis(t)
	l, next := newLeaseStack(t, c, prefix, 5*time.Second, LeaseConfig{MaxAge: time.Hour}, FallbackConfig{})
	p := mustPolicy(t, "redirect", "100/1h:100")
	buf := []byte("10.0.0.1")
	allow(t, l, p, unsafe.String(&buf[0], len(buf)), 1)
	allow(t, l, p, unsafe.String(&buf[0], len(buf)), 1) // a lease of 4
	copy(buf, "10.0.0.2")
	if d := allow(t, l, p, "10.0.0.1", 1); d.Source != SourceLease || next.calls.Load() != 2 {
		t.Fatalf("10.0.0.1 second request: %+v, want a leased token (its lease kept its key)", d)
	}
}

// askCountingCtx counts the calls asking a context whether or when it ends.
type askCountingCtx struct {
	context.Context
	asked atomic.Int64
}

func (c *askCountingCtx) Deadline() (time.Time, bool) { c.asked.Add(1); return c.Context.Deadline() }
func (c *askCountingCtx) Done() <-chan struct{}       { c.asked.Add(1); return c.Context.Done() }
func (c *askCountingCtx) Err() error                  { c.asked.Add(1); return c.Context.Err() }

// A token from a lease is handed out without asking ctx whether or when it
// ends: that is what lets the middleware's lazy decision deadline skip its
// clock read on the redirect path.
func TestLeaserHitLeavesCtxAlone(t *testing.T) {
	p := mustPolicy(t, "redirect", "1000/1h:1000")
	next := deciderFunc(func(_ context.Context, p Policy, _ string, cost int64) (Decision, error) {
		return Decision{Allowed: true, Limit: p.Burst, Remaining: p.Burst - cost, Source: SourceRedis}, nil
	})
	l, err := NewLeaser(LeaseConfig{Next: next, Size: 4, MaxAge: time.Hour}) // below aheadMin: never taken ahead
	if err != nil {
		t.Fatal(err)
	}
	// A new key's first lease is one token; the second is the Size.
	for i := range 2 {
		if d := allow(t, l, p, "k", 1); !d.Allowed || d.Source != SourceRedis {
			t.Fatalf("leading decision %d: %+v, want allowed by Redis", i+1, d)
		}
	}
	ctx := &askCountingCtx{Context: context.Background()}
	for i := range 3 {
		if d, err := l.Allow(ctx, p, "k", 1); err != nil || !d.Allowed || d.Source != SourceLease {
			t.Fatalf("token %d of the lease: %+v, %v; want allowed from the lease", i+2, d, err)
		}
	}
	if n := ctx.asked.Load(); n != 0 {
		t.Fatalf("answering from the lease asked ctx %d times, want 0", n)
	}
	// The lease is spent: the next decision leads a fetch, and may ask.
	if d, err := l.Allow(ctx, p, "k", 1); err != nil || d.Source != SourceRedis {
		t.Fatalf("after the lease: %+v, %v; want a Redis decision", d, err)
	}
}
