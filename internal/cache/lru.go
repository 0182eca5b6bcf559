package cache

import (
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

// lru is the in-process tier (L1): a fixed-capacity LRU of compact entries,
// each with its own deadline, split into independently locked shards.
//
// Why our own rather than golang-lru/v2/expirable, which this package used
// first: expirable keeps a list element with a time.Time, a map entry and the
// cached value per key, takes one mutex for all cores and reads the wall
// clock on every Get. Holding *links.Link values that came to about 650 B of
// Go heap per cached link, 740 B of resident memory beyond the URL at a
// million links (bench/results.md before this change), against a target of
// 200 B; and the one lock and clock read were a measurable part of a
// redirect. Here an entry is 64 bytes holding only what a redirect needs
// (code, URL, status, expiry), entries live in chunks that are allocated
// once and reused, linked by index instead of pointer, the map holds code →
// index, and the clock is a monotonic reading (time.Since).
//
// Eviction is least-recently-used per shard: a shard holds at most
// ceil(size/shards) entries, so the whole holds at most size plus fewer
// than one entry per shard, and a full shard evicts its own least recently
// used entry even when another shard has room. Small sizes get one shard,
// which is exact LRU. An entry past its deadline is never returned; it is
// dropped when looked up or when it reaches the cold end. Safe for concurrent
// use.
type lru struct {
	shards []lruShard
	mask   uint64
	seed   maphash.Seed
	ttl    time.Duration
	base   time.Time // the clock's zero: deadlines are durations since it
}

// lruChunk is how many entries are allocated at a time, per shard.
const lruChunk = 1024

// lruEntry is one cached code. code and url are the only pointers.
type lruEntry struct {
	code, url  string
	expires    int64 // links.Link.ExpiresAt in Unix microseconds; 0: never
	deadline   int64 // nanoseconds since lru.base after which the entry is dead
	prev, next int32 // neighbours in the recency list (-1: none)
	redirect   uint16
}

type lruShard struct {
	mu     sync.Mutex
	m      map[string]int32 // code → entry index
	chunks [][]lruEntry     // entry i is chunks[i/lruChunk][i%lruChunk]
	used   int32            // entries ever handed out (free ones are on the free list)
	limit  int32            // most entries held at once
	head   int32            // most recently used, -1 when empty
	tail   int32            // least recently used, -1 when empty
	free   int32            // free list through next, -1 when empty
	_      [64]byte         // keep shards' locks on separate cache lines
}

// lruValue is what an entry holds besides its code.
type lruValue struct {
	url      string
	expires  int64
	redirect uint16
}

// valueOf returns what L1 keeps of t (nil: a negative entry).
func valueOf(t *links.Target) lruValue {
	if t == nil {
		return lruValue{}
	}
	v := lruValue{url: t.URL, redirect: uint16(t.Redirect)}
	if !t.ExpiresAt.IsZero() {
		v.expires = t.ExpiresAt.UnixMicro()
	}
	return v
}

// target rebuilds the target of code (owned by the entry) from v.
func (v lruValue) target(code string) links.Target {
	t := links.Target{Code: code, URL: v.url, Redirect: int(v.redirect)}
	if v.expires != 0 {
		t.ExpiresAt = time.UnixMicro(v.expires).UTC()
	}
	return t
}

// newLRU returns an lru holding at most about size entries for ttl each.
func newLRU(size int, ttl time.Duration) *lru {
	n := 1
	for n < 64 && size/(n*2) >= 4*lruChunk { // shards of at least 4096 entries
		n *= 2
	}
	l := &lru{shards: make([]lruShard, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), ttl: ttl, base: time.Now()}
	per := int32((size + n - 1) / n)
	for i := range l.shards {
		s := &l.shards[i]
		s.m = make(map[string]int32)
		s.limit, s.head, s.tail, s.free = per, -1, -1, -1
	}
	return l
}

func (l *lru) shard(code string) *lruShard {
	return &l.shards[maphash.String(l.seed, code)&l.mask]
}

func (l *lru) now() int64 { return int64(time.Since(l.base)) }

func (s *lruShard) at(i int32) *lruEntry { return &s.chunks[i/lruChunk][i%lruChunk] }

// get returns code's value and the entry's copy of code (owned, unlike a
// borrowed lookup key), and marks it most recently used. An entry past its
// deadline is removed and not returned.
func (l *lru) get(code string) (lruValue, string, bool) {
	s := l.shard(code)
	now := l.now()
	s.mu.Lock()
	i, ok := s.m[code]
	if !ok {
		s.mu.Unlock()
		return lruValue{}, "", false
	}
	e := s.at(i)
	if now > e.deadline {
		s.remove(i)
		s.mu.Unlock()
		return lruValue{}, "", false
	}
	v, owned := lruValue{url: e.url, expires: e.expires, redirect: e.redirect}, e.code
	if s.head != i {
		s.unlink(i)
		s.pushFront(i)
	}
	s.mu.Unlock()
	return v, owned, true
}

// contains reports whether code has a live entry, without marking it used.
func (l *lru) contains(code string) bool {
	s := l.shard(code)
	now := l.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.m[code]
	return ok && now <= s.at(i).deadline
}

// add stores v under code (replacing what it held) for ttl, evicting the
// shard's least recently used entry when it is full. code must be owned by
// the caller (not a view into a reused buffer).
func (l *lru) add(code string, v lruValue) {
	s := l.shard(code)
	deadline := l.now() + int64(l.ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.m[code]; ok {
		e := s.at(i)
		e.url, e.expires, e.redirect, e.deadline = v.url, v.expires, v.redirect, deadline
		if s.head != i {
			s.unlink(i)
			s.pushFront(i)
		}
		return
	}
	if int32(len(s.m)) >= s.limit {
		s.remove(s.tail)
	}
	i := s.alloc()
	*s.at(i) = lruEntry{code: code, url: v.url, expires: v.expires, redirect: v.redirect, deadline: deadline}
	s.m[code] = i
	s.pushFront(i)
}

// remove drops code's entry, if any.
func (l *lru) remove(code string) {
	s := l.shard(code)
	s.mu.Lock()
	if i, ok := s.m[code]; ok {
		s.remove(i)
	}
	s.mu.Unlock()
}

// purge drops every entry and releases the chunks.
func (l *lru) purge() {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.m = make(map[string]int32)
		s.chunks, s.used, s.head, s.tail, s.free = nil, 0, -1, -1, -1
		s.mu.Unlock()
	}
}

// len returns the number of entries held, including ones past their deadline
// that no lookup has dropped yet.
func (l *lru) len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// keys returns the codes of the live entries, in no particular order.
func (l *lru) keys() []string {
	now := l.now()
	var out []string
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for code, j := range s.m {
			if now <= s.at(j).deadline {
				out = append(out, strings.Clone(code))
			}
		}
		s.mu.Unlock()
	}
	return out
}

// alloc returns a free entry index, from the free list or a new chunk.
func (s *lruShard) alloc() int32 {
	if i := s.free; i >= 0 {
		s.free = s.at(i).next
		return i
	}
	if int(s.used) == len(s.chunks)*lruChunk {
		s.chunks = append(s.chunks, make([]lruEntry, lruChunk))
	}
	s.used++
	return s.used - 1
}

// remove unlinks entry i, deletes it from the map and frees it.
func (s *lruShard) remove(i int32) {
	e := s.at(i)
	delete(s.m, e.code)
	s.unlink(i)
	*e = lruEntry{next: s.free} // drop the strings for the GC
	s.free = i
}

func (s *lruShard) unlink(i int32) {
	e := s.at(i)
	if e.prev >= 0 {
		s.at(e.prev).next = e.next
	} else {
		s.head = e.next
	}
	if e.next >= 0 {
		s.at(e.next).prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (s *lruShard) pushFront(i int32) {
	e := s.at(i)
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.at(s.head).prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}
