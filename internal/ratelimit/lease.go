package ratelimit

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"
)

// LeaseConfig configures a Leaser.
type LeaseConfig struct {
	// Next is the shared, exact decider the tokens are taken from: a
	// Fallback over a Batcher in production. Its decisions with Source
	// SourceRedis are leased from; any other decision (SourceNone while
	// Redis is unavailable and the policy fails open, SourceLocal from the
	// fallback bucket) is passed through and nothing is leased. When Next
	// has an Active() bool method (Fallback does) and it reports true, the
	// Leaser asks for one token at a time (a lease asked for just as the
	// breaker opens is charged to the local bucket in full). Required.
	Next Decider
	// Size is L, the most tokens one lease takes from Next: the caller's
	// token and up to L−1 kept for later requests of the same policy and
	// key. It bounds the over-admission (see the package doc). 1 turns
	// leasing off (every decision goes to Next; denials are still
	// remembered). Default: 16.
	Size int64
	// MaxAge is how long leased tokens may be used, counted from before the
	// call that took them; tokens still unused then are dropped, not
	// returned to the bucket. Default: 1s.
	MaxAge time.Duration
	// MaxKeys bounds the keys (policy and client key pairs) remembered.
	// Forgetting one drops its unused leased tokens. Default: 100000.
	MaxKeys int
	// Now is the clock; only durations are taken from it. Default: the
	// monotonic clock.
	Now func() time.Time
}

// Leaser is a Decider in front of an exact shared one (Next) that takes
// tokens from the shared bucket a few at a time and spends them locally, so
// that a client making several requests costs Next (Redis) about one call
// per lease instead of one per request. It is meant for the redirect policy
// (FailOpen); a policy that must be exact (create) keeps using Next
// directly. The package doc states how far it can over- and under-admit.
//
// When a cost-1 request finds no usable leased tokens for its policy and
// key, it asks Next for n tokens in one decision, n = min(Size, Burst,
// max(1, E/2), D). E is the bucket's estimated content: the Remaining of
// the last decision plus the whole tokens refilled since it was asked for
// (a lower bound unless other instances took tokens meanwhile). Taking at
// most half of it keeps leases small as a bucket runs out, so that other
// instances still find tokens there for the same client, and near
// exhaustion every request is decided by Next one token at a time. D is
// the demand seen: a new key's first request takes 1 token; a key whose
// last lease was used up within MaxAge gets twice the requests it served,
// this one and those queued, so a busy client reaches Size in a few
// leases; a lease that outlived MaxAge is followed by one the size of what
// it served. A client whose requests reach an instance at least MaxAge
// apart is thus decided exactly there, and a slow client spread over many
// instances does not strand a lease on each.
//
// If Next allows, the request is allowed and n−1 tokens are kept until
// MaxAge after the call began; if it denies n > 1 tokens, it is asked again
// for 1 (exactly what Next alone would decide). A denial of one token is remembered until its RetryAfter,
// measured from before the call (as OverLimitCache does: it never denies
// what Next would allow), so a client over its limit costs Next one call
// per refill; an OverLimitCache in front of a Leaser is unnecessary.
//
// A busy key takes its next lease ahead: when the last lease was at least
// aheadMin tokens and half of it is spent within MaxAge/2 of the call that
// took it, the request spending the token that leaves half starts a call to
// Next in the background for min(Size−1, Burst, E/2) less the tokens still
// held, and the key's requests go on spending those meanwhile (see
// aheadSize). Those tokens are spent once the current lease's are, and
// expire MaxAge after their own call began.
//
// Only one call per key asks Next for a lease at a time. Requests
// arriving meanwhile queue, in order, up to 4×Size of them (what four full
// leases serve; more ask Next for one token each at once). When the lease
// arrives, its tokens (or the remembered denial) are handed to the queue in
// order, and the first request still waiting asks for the next lease;
// a request passed over by 5 leases (four full ones after a key's first,
// single-token one), or whose ctx ends while it waits, asks Next for one
// token itself. When the answer was not a Redis decision (an
// error, or Redis unavailable), every queued request asks Next for itself
// at once, exactly as without the Leaser. A queue longer than 64 is
// released once it empties, so a burst's slice is not kept with the key.
//
// Decisions from leased tokens have Source SourceLease, Allowed true,
// Limit Burst, RetryAfter 0, Remaining the last Redis Remaining for the key
// plus the tokens this instance still holds for it (what Next alone would
// report with one instance and no refill), and Reset the last Redis Reset
// less the time since. The request that took a lease gets Next's decision
// (Source SourceRedis) with the same Remaining; remembered denials have
// Source SourceRedis like OverLimitCache's. Requests with a cost other than
// 1, and disabled policies, go to Next unchanged and leave leases alone.
//
// With tokens leased, a decision is one sharded lock and one map lookup,
// without allocating. Memory is bounded by MaxKeys. Safe for concurrent use.
type Leaser struct {
	next     Decider
	active   func() bool // Next's Active method, or nil
	size     int64
	maxQueue int
	maxAge   int64 // nanoseconds
	clk      elapsed
	maxShard int
	seed     maphash.Seed
	waiters  sync.Pool // *leaseWaiter
	shards   [localShards]leaseShard
}

// leaseQueueLeases is the number of full leases whose tokens may be queued
// for; leaseMaxWaits is the number of leases a queued request may be passed
// over by before it asks Next for itself: those and a key's first lease,
// of one token.
const (
	leaseQueueLeases = 4
	leaseMaxWaits    = leaseQueueLeases + 1
)

type leaseKey struct {
	p   Policy
	key string
}

// leaseEntry is the state of one policy and key. Times are nanoseconds
// since the Leaser was made.
type leaseEntry struct {
	tokens    int64          // leased tokens not yet handed out
	expires   int64          // when they are dropped
	spare     int64          // tokens of a lease taken ahead, spent after tokens
	spareExp  int64          // when those are dropped
	lastN     int64          // size of the last lease granted; 0 after a denial
	used      int64          // tokens handed out from the last lease
	remaining int64          // Remaining of the last Redis decision; -1: none yet
	at        int64          // when that decision was asked for
	reset     time.Duration  // its Reset
	denied    int64          // the last Redis denial of one token holds until then
	fetching  bool           // a lease is being asked for (by a request or ahead)
	queue     []*leaseWaiter // requests waiting for that lease, in arrival order
}

// leaseWaiter is one queued request. Its channel receives exactly one
// message, sent under the shard lock by whoever takes it off the queue.
type leaseWaiter struct {
	c      chan leaseMsg // buffered 1: the sender never blocks
	passed int           // leases that arrived without a token for it
}

type leaseMsg struct {
	kind uint8 // leaseDecided, leaseLead or leaseDirect
	d    Decision
}

const (
	leaseDecided = iota // d is the decision
	leaseLead           // ask Next for the next lease
	leaseDirect         // ask Next for one token, on its own
)

type leaseShard struct {
	mu sync.Mutex
	m  map[leaseKey]*leaseEntry
	_  [48]byte // keep shards on separate cache lines (64 bytes each)
}

// NewLeaser returns a Leaser, or an error when cfg.Next is nil.
func NewLeaser(cfg LeaseConfig) (*Leaser, error) {
	if cfg.Next == nil {
		return nil, errors.New("new rate limit leaser: Next is required")
	}
	if cfg.Size <= 0 {
		cfg.Size = 16
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Second
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	l := &Leaser{
		next:     cfg.Next,
		size:     cfg.Size,
		maxQueue: int(min(cfg.Size, 1<<20)) * leaseQueueLeases,
		maxAge:   int64(cfg.MaxAge),
		clk:      newElapsed(cfg.Now),
		maxShard: max(1, cfg.MaxKeys/localShards),
		seed:     maphash.MakeSeed(),
	}
	l.waiters.New = func() any { return &leaseWaiter{c: make(chan leaseMsg, 1)} }
	if a, ok := cfg.Next.(interface{ Active() bool }); ok {
		l.active = a.Active
	}
	for i := range l.shards {
		l.shards[i].m = make(map[leaseKey]*leaseEntry)
	}
	return l, nil
}

// clock is the time in nanoseconds since the Leaser was made.
func (l *Leaser) clock() int64 { return l.clk.nanos() }

// Allow implements Decider.
func (l *Leaser) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	if cost != 1 || p.Disabled {
		return l.next.Allow(ctx, p, key, cost)
	}
	if err := check(p, cost); err != nil {
		return Decision{}, err
	}
	k := leaseKey{p: p, key: key}
	s := &l.shards[maphash.String(l.seed, key)%localShards]
	now := l.clock()
	s.mu.Lock()
	e := s.m[k]
	if e == nil {
		if len(s.m) >= l.maxShard {
			s.sweep(now, l.maxShard)
		}
		e = &leaseEntry{remaining: -1}
		// The key may be a view into a reused request buffer.
		s.m[leaseKey{p: p, key: strings.Clone(key)}] = e
	}
	if d, ok := e.answer(p, now); ok {
		ahead := l.aheadSize(e, p, now)
		e.fetching = e.fetching || ahead > 0
		s.mu.Unlock()
		if ahead > 0 {
			l.fetchAhead(ctx, s, e, p, key, ahead, now)
		}
		return d, nil
	}
	if !e.fetching {
		e.fetching = true
		return l.lead(ctx, s, e, p, key, now)
	}
	if len(e.queue) >= l.maxQueue {
		s.mu.Unlock()
		return l.next.Allow(ctx, p, key, 1)
	}
	w := l.waiters.Get().(*leaseWaiter)
	e.queue = append(e.queue, w)
	s.mu.Unlock()

	var m leaseMsg
	select {
	case m = <-w.c:
	case <-ctx.Done():
		s.mu.Lock()
		if i := slices.Index(e.queue, w); i >= 0 {
			e.queue = slices.Delete(e.queue, i, i+1)
			s.mu.Unlock()
			l.putWaiter(w)
			// Decided on its own, as without the Leaser (Next reports the
			// ctx error or answers without Redis).
			return l.next.Allow(ctx, p, key, 1)
		}
		s.mu.Unlock()
		m = <-w.c // taken off the queue already: its message is there
	}
	l.putWaiter(w)
	switch m.kind {
	case leaseDecided:
		return m.d, nil
	case leaseLead:
		s.mu.Lock()
		if ctx.Err() == nil {
			return l.lead(ctx, s, e, p, key, l.clock())
		}
		// Gone while it waited: the next in line leads instead (an expired
		// ctx would fail the fetch, and count against Redis).
		if len(e.queue) > 0 {
			e.queue[0].c <- leaseMsg{kind: leaseLead}
			e.queue = slices.Delete(e.queue, 0, 1)
		} else {
			e.fetching = false
		}
		s.mu.Unlock()
		return l.next.Allow(ctx, p, key, 1)
	default:
		return l.next.Allow(ctx, p, key, 1)
	}
}

func (l *Leaser) putWaiter(w *leaseWaiter) {
	w.passed = 0
	l.waiters.Put(w)
}

// lead asks Next for a lease for e and hands the outcome to e's queue. It is
// called with s.mu held and e.fetching set, and unlocks s.mu.
func (l *Leaser) lead(ctx context.Context, s *leaseShard, e *leaseEntry, p Policy, key string, now int64) (Decision, error) {
	n := l.leaseSize(e, p, now)
	s.mu.Unlock()

	if n > 1 && l.active != nil && l.active() {
		n = 1 // Next answers locally: a lease would take n from its local bucket
	}
	sent := now
	d, err := l.next.Allow(ctx, p, key, n)
	if err == nil && !d.Allowed && n > 1 && d.Source == SourceRedis {
		// Fewer than n tokens left: decide this request exactly.
		sent, n = l.clock(), 1
		d, err = l.next.Allow(ctx, p, key, 1)
	}
	fromRedis := err == nil && d.Source == SourceRedis

	s.mu.Lock()
	if fromRedis {
		e.noteRedis(d, n, sent)
		if d.Allowed {
			e.tokens, e.expires = n-1, sent+l.maxAge
			d.Remaining = min(p.Burst, d.Remaining+e.tokens)
		} else if d.RetryAfter > 0 {
			e.denied = sent + int64(d.RetryAfter)
		}
	}
	e.handOff(p, fromRedis, l.clock())
	s.mu.Unlock()
	return d, err
}

// handOff ends a fetch for e's queue: in order, each request gets a leased
// token or the remembered denial while there are any; the rest are passed
// over, those passed over leaseMaxWaits times asking Next on their own, and
// the first of the others leads the next fetch. Without a Redis decision
// every request asks Next on its own. Called with the shard lock held.
func (e *leaseEntry) handOff(p Policy, fromRedis bool, now int64) {
	q := e.queue
	i := 0
	for ; i < len(q); i++ {
		if !fromRedis {
			q[i].c <- leaseMsg{kind: leaseDirect}
			continue
		}
		d, ok := e.answer(p, now)
		if !ok {
			break
		}
		q[i].c <- leaseMsg{kind: leaseDecided, d: d}
	}
	rest := q[:0]
	for _, w := range q[i:] {
		if w.passed++; w.passed >= leaseMaxWaits {
			w.c <- leaseMsg{kind: leaseDirect}
			continue
		}
		rest = append(rest, w)
	}
	e.fetching = len(rest) > 0
	if e.fetching {
		rest[0].c <- leaseMsg{kind: leaseLead}
		rest = rest[1:]
	}
	n := copy(q, rest)
	clear(q[n:])
	e.queue = q[:n]
	if n == 0 && cap(q) > leaseQueueKeep {
		e.queue = nil // a burst's queue (up to 4×Size waiters) is not kept for the key's lifetime
	}
}

// leaseQueueKeep is the largest empty queue an entry keeps for reuse; a
// longer one is released once it empties.
const leaseQueueKeep = 64

// aheadMin is the smallest lease after which the next one is taken ahead.
const aheadMin = 8

// aheadSize is the size of the lease to take ahead for e at now, or 0 for
// none. A busy key, one whose last lease was at least aheadMin tokens and
// half spent within MaxAge/2 of the call that took it, asks for its next
// lease then, so that its requests do not wait for the round trip. The
// lease is what the bucket can spare (leaseSize's min(Size, Burst, E/2),
// the demand being shown) less the tokens still held, so that the instance
// never holds more than Size−1, the bound of the package doc. None while a
// fetch is in flight, while a lease taken ahead is unspent, after a denial
// (until a request's own lease succeeds), or while Next answers locally.
// Called with the shard lock held.
func (l *Leaser) aheadSize(e *leaseEntry, p Policy, now int64) int64 {
	if e.fetching || e.spare > 0 || e.lastN < aheadMin || e.tokens > e.lastN/2 || now-e.at >= l.maxAge/2 {
		return 0
	}
	n := min(l.size-1, p.Burst, e.estimate(p, now)/2) - e.tokens
	if n < 2 || (l.active != nil && l.active()) {
		return 0
	}
	return n
}

// fetchAhead asks Next for a lease of n tokens for e in a goroutine of its
// own, under a deadline like ctx's (ctx ends with its request), and keeps
// them as e's spare tokens; then it hands out tokens to e's queue as lead
// does. Called with e.fetching set and the shard lock not held.
func (l *Leaser) fetchAhead(ctx context.Context, s *leaseShard, e *leaseEntry, p Policy, key string, n, sent int64) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	key = strings.Clone(key) // may be a view into a reused request buffer
	go func() {
		ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		d, err := l.next.Allow(ctx, p, key, n)
		cancel()
		fromRedis := err == nil && d.Source == SourceRedis
		s.mu.Lock()
		if fromRedis {
			// A denial of n tokens says nothing of one: nothing is remembered
			// but the bucket's content, which shrinks the next lease.
			e.noteRedis(d, n, sent)
			if d.Allowed {
				e.spare, e.spareExp = n, sent+l.maxAge
			}
		}
		e.handOff(p, fromRedis, l.clock())
		s.mu.Unlock()
	}()
}

// noteRedis records a Redis decision on a lease of n tokens asked for at
// sent: the bucket's content then and the lease's size (0 when denied).
func (e *leaseEntry) noteRedis(d Decision, n, sent int64) {
	e.remaining, e.at, e.reset, e.used = d.Remaining, sent, d.Reset, 0
	e.lastN = 0
	if d.Allowed {
		e.lastN = n
	}
}

// estimate is the bucket's estimated content at now: the last Remaining
// plus the whole tokens refilled since it was asked for, at most Burst.
func (e *leaseEntry) estimate(p Policy, now int64) int64 {
	return min(p.Burst, e.remaining+refilled(p, now-e.at))
}

// take spends one leased token at now, if e holds a usable one: from the
// current lease, else from the spare one, which then becomes current.
// Expired tokens are dropped.
func (e *leaseEntry) take(now int64) bool {
	if e.tokens > 0 && now < e.expires {
		e.tokens--
		return true
	}
	e.tokens = 0
	if e.spare > 0 && now < e.spareExp {
		e.tokens, e.expires, e.spare = e.spare-1, e.spareExp, 0
		return true
	}
	e.spare = 0
	return false
}

// held is the number of usable leased tokens e holds at now.
func (e *leaseEntry) held(now int64) int64 {
	var n int64
	if now < e.expires {
		n += e.tokens
	}
	if now < e.spareExp {
		n += e.spare
	}
	return n
}

// answer hands out a leased token, or the remembered denial, if e has one
// at now.
func (e *leaseEntry) answer(p Policy, now int64) (Decision, bool) {
	if e.take(now) {
		e.used++
		return e.decision(p, now), true
	}
	if now < e.denied {
		return Decision{Limit: p.Burst, RetryAfter: time.Duration(e.denied - now), Reset: e.resetAt(now), Source: SourceRedis}, true
	}
	return Decision{}, false
}

// leaseSize is the number of tokens to ask for at now: 1 for a new key,
// else min(Size, Burst, max(1, E/2), D), where E estimates the tokens in
// the shared bucket (the last Remaining plus the refill since) and D the
// requests the lease will serve. D counts the requests the last lease
// served (the one that took it and those given its tokens): when this
// request comes within MaxAge of that lease, D is twice the sum of that
// count, this request and those queued (demand is at least that and may
// grow); later, D is the count alone. Called with the shard lock held.
func (l *Leaser) leaseSize(e *leaseEntry, p Policy, now int64) int64 {
	if e.remaining < 0 {
		return 1
	}
	est := e.estimate(p, now)
	want := 1 + e.used
	if now < e.at+l.maxAge {
		want = 2 * (want + 1 + int64(len(e.queue)))
	}
	return max(1, min(l.size, p.Burst, est/2, want))
}

// refilled is the number of whole tokens p's bucket gains in elapsed
// nanoseconds (at most Burst).
func refilled(p Policy, elapsed int64) int64 {
	us := elapsed / int64(time.Microsecond)
	if us <= 0 {
		return 0
	}
	pr := p.params()
	if us >= pr.fullIn(0) {
		return p.Burst
	}
	return us * pr.rate / pr.unit // us × rate < capacity + rate: no overflow
}

// decision is the decision for a token handed out from e's lease at now.
func (e *leaseEntry) decision(p Policy, now int64) Decision {
	return Decision{
		Allowed:   true,
		Limit:     p.Burst,
		Remaining: min(p.Burst, e.remaining+e.held(now)),
		Reset:     e.resetAt(now),
		Source:    SourceLease,
	}
}

// resetAt is the last decision's Reset less the time since it was asked for.
func (e *leaseEntry) resetAt(now int64) time.Duration {
	return max(0, e.reset-time.Duration(now-e.at))
}

// idle reports whether e holds nothing worth keeping at now: no usable
// tokens, no denial in force, no fetch in flight.
func (e *leaseEntry) idle(now int64) bool {
	return !e.fetching && e.held(now) == 0 && now >= e.denied
}

// sweep drops the idle entries, then arbitrary ones down to 7/8 of limit
// (see localShard.sweep), their leased tokens lost. Entries with a fetch in
// flight are kept (a shard exceeds limit only while more than limit/8 of
// its keys are fetching at once), so that no key has two leases on one
// instance.
func (s *leaseShard) sweep(now int64, limit int) {
	sweepMap(s.m, limit, func(e *leaseEntry) bool { return e.idle(now) },
		func(e *leaseEntry) bool { return !e.fetching })
}
