package cache

import (
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/linkgate/linkgate/internal/links"
)

// lru is the in-process tier (L1): a fixed-capacity LRU of redirect targets,
// each with its own deadline, split into independently locked shards whose
// memory lies outside the Go heap.
//
// Why our own rather than golang-lru/v2/expirable, which this package used
// first: expirable keeps a list element with a time.Time, a map entry and the
// cached value per key, takes one mutex for all cores and reads the wall
// clock on every Get. Holding *links.Link values that came to 740 B of
// resident memory per cached link beyond the URL at a million links, against
// a target of 200 B (bench/results.md). A first compact version (64-byte
// entries, a Go map, URLs as Go strings) still measured 361 B: whatever the
// Go heap holds live, the garbage collector lets the heap grow to about twice
// that (GOGC=100) before collecting, and a cache of a million links is most
// of the live heap. So a shard keeps its records, its hash index and the
// code and URL bytes in memory of its own (mmap'd where the platform has it,
// see lru_mem_*.go), which the collector neither scans nor counts: a cached
// link costs a 40-byte record, 16 bytes of index and its bytes rounded up to
// 16, and nothing more however much garbage requests make. The price is one
// allocation per hit (the target's code and URL, copied out under the
// lock, since a slot is reused once its entry is gone).
//
// Eviction is least-recently-used per shard: a shard holds at most
// ceil(size/shards) entries, so the whole holds at most size plus fewer than
// one entry per shard, and a full shard evicts its own least recently used
// entry even when another shard has room. Small sizes get one shard, which
// is exact LRU. An entry past its deadline is never returned; it is dropped
// when looked up or when it reaches the cold end. Codes longer than
// maxL1Code and data longer than maxL1Data are not kept. Safe for concurrent
// use.
type lru struct {
	shards []lruShard
	mask   uint64
	seed   maphash.Seed
	ttl    time.Duration
	base   time.Time // the clock's zero: deadlines are durations since it
}

// Limits of what L1 keeps.
const (
	maxL1Code = 255                  // fits lruRec.clen
	maxL1Data = maxL1Code + 2048 + 1 // code + the longest URL the service accepts
	slotUnit  = 16                   // data slots are multiples of this
	nClasses  = (maxL1Data + slotUnit - 1) / slotUnit
	// linkDataPerEntry and negativeDataPerEntry are the data arena reserved
	// per entry (address space: only what is written becomes resident). When
	// it runs out, the shard evicts cold entries to reuse their slots.
	minIndex             = 64 // index slots in use in an empty shard (see grow)
	linkDataPerEntry     = 512
	negativeDataPerEntry = 32
)

// lruRec is one entry's record: no Go pointers.
type lruRec struct {
	hash       uint64 // maphash of the code
	deadline   int64  // nanoseconds since lru.base after which the entry is dead
	expires    int64  // links.Target.ExpiresAt in Unix microseconds; 0: never
	off        uint32 // data slot offset in slotUnit
	prev, next int32  // neighbours in the recency list (-1: none); next also links free records
	dlen       uint16 // code + URL bytes
	clen       uint8  // code bytes
	redirect   uint8  // status - 300
}

type lruShard struct {
	mu      sync.Mutex
	recs    []lruRec // limit records
	index   []uint32 // linear probing: record index + 1, 0 empty; len a power of two
	imask   uint32   // len of the index in use, index[:imask+1], minus one (see grow)
	data    []byte   // code+URL slots
	top     uint32   // data bump offset, in slotUnit
	free    [nClasses]uint32
	freeRec int32 // free records through next, -1 none
	usedRec int32 // records ever handed out
	n       int32
	limit   int32
	head    int32 // most recently used, -1 when empty
	tail    int32 // least recently used, -1 when empty
	mem     *lruMem
	_       [64]byte // keep shards' locks on separate cache lines
}

// newLRU returns an lru holding at most about size entries for ttl each,
// reserving dataPerEntry bytes per entry for codes and URLs.
func newLRU(size int, ttl time.Duration, dataPerEntry int) *lru {
	n := 1
	for n < 64 && size/(n*2) >= 4096 { // shards of at least 4096 entries
		n *= 2
	}
	l := &lru{shards: make([]lruShard, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), ttl: ttl, base: time.Now()}
	per := (size + n - 1) / n
	for i := range l.shards {
		l.shards[i].init(per, dataPerEntry)
	}
	return l
}

func (s *lruShard) init(limit, dataPerEntry int) {
	idx := 1 << bits.Len(uint(2*limit-1)) // at most half full
	recBytes := limit * int(unsafe.Sizeof(lruRec{}))
	dataBytes := max(limit*dataPerEntry, 2*maxL1Data)
	s.mem = newLRUMem(recBytes + idx*4 + dataBytes)
	b := s.mem.b
	s.recs = unsafe.Slice((*lruRec)(unsafe.Pointer(&b[0])), limit)
	s.index = unsafe.Slice((*uint32)(unsafe.Pointer(&b[recBytes])), idx)
	s.data = b[recBytes+idx*4:]
	s.limit = int32(limit)
	s.reset()
}

// reset empties the shard and gives the pages it wrote back.
func (s *lruShard) reset() {
	if s.top > 0 || s.usedRec > 0 {
		s.mem.release()
	}
	s.top, s.free, s.freeRec, s.usedRec, s.n, s.head, s.tail = 0, [nClasses]uint32{}, -1, 0, 0, -1, -1
	s.imask = uint32(min(len(s.index), minIndex)) - 1
}

func (l *lru) shard(h uint64) *lruShard { return &l.shards[h&l.mask] }

func (l *lru) now() int64 { return int64(time.Since(l.base)) }

// find returns the index slot and record of code, or ok=false. Called with
// mu held.
func (s *lruShard) find(h uint64, code string) (slot uint32, rec int32, ok bool) {
	mask := s.imask
	for i := uint32(h>>32) & mask; ; i = (i + 1) & mask {
		v := s.index[i]
		if v == 0 {
			return 0, 0, false
		}
		r := &s.recs[v-1]
		if r.hash == h && int(r.clen) == len(code) && s.code(r) == code {
			return i, int32(v - 1), true
		}
	}
}

// code returns r's code bytes as a string view; valid only under mu.
func (s *lruShard) code(r *lruRec) string {
	return unsafe.String(&s.data[int(r.off)*slotUnit], int(r.clen))
}

// get returns code's target, with Code and URL in one new allocation (the
// caller may keep them), and marks the entry most recently used. An entry
// past its deadline is removed and not returned.
func (l *lru) get(code string) (links.Target, bool) {
	h := maphash.String(l.seed, code)
	s := l.shard(h)
	now := l.now()
	s.mu.Lock()
	slot, i, ok := s.find(h, code)
	if !ok {
		s.mu.Unlock()
		return links.Target{}, false
	}
	r := &s.recs[i]
	if now > r.deadline {
		s.remove(slot, i)
		s.mu.Unlock()
		return links.Target{}, false
	}
	off := int(r.off) * slotUnit
	both := string(s.data[off : off+int(r.dlen)])
	t := links.Target{Code: both[:r.clen], URL: both[r.clen:], Redirect: 300 + int(r.redirect)}
	if r.expires != 0 {
		t.ExpiresAt = time.UnixMicro(r.expires).UTC()
	}
	if s.head != i {
		s.unlink(i)
		s.pushFront(i)
	}
	s.mu.Unlock()
	return t, true
}

// contains reports whether code has a live entry, without marking it used.
func (l *lru) contains(code string) bool {
	h := maphash.String(l.seed, code)
	s := l.shard(h)
	now := l.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, i, ok := s.find(h, code)
	return ok && now <= s.recs[i].deadline
}

// add stores t under code (nil: a negative entry, code alone) for ttl,
// replacing what code held, evicting the shard's least recently used entries
// when it is full. Codes or URLs over the limits, or a status outside
// 300..555, are not stored (an entry the code had is removed).
func (l *lru) add(code string, t *links.Target) {
	h := maphash.String(l.seed, code)
	s := l.shard(h)
	deadline := l.now() + int64(l.ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slot, i, ok := s.find(h, code); ok {
		s.remove(slot, i)
	}
	var url string
	var expires int64
	var redirect uint8
	if t != nil {
		if t.Redirect < 300 || t.Redirect > 300+255 {
			return
		}
		url, redirect = t.URL, uint8(t.Redirect-300)
		if !t.ExpiresAt.IsZero() {
			expires = t.ExpiresAt.UnixMicro()
		}
	}
	dlen := len(code) + len(url)
	if len(code) > maxL1Code || dlen > maxL1Data || dlen == 0 {
		return
	}
	for s.n >= s.limit {
		s.evictTail()
	}
	off, ok := s.allocData(dlen)
	// The arena is used up and no free slot fits: free a few cold slots. A
	// bounded number, so that a URL of an unusual length never empties a
	// shard; an empty shard starts its arena over (no slot is in use).
	for tries := 0; !ok && s.n > 0 && tries < 16; tries++ {
		s.evictTail()
		off, ok = s.allocData(dlen)
	}
	if !ok && s.n == 0 {
		s.top, s.free = 0, [nClasses]uint32{}
		off, ok = s.allocData(dlen)
	}
	if !ok {
		return // not cached this time
	}
	i := s.freeRec
	if i >= 0 {
		s.freeRec = s.recs[i].next
	} else {
		i = s.usedRec
		s.usedRec++
	}
	b := s.data[int(off)*slotUnit:]
	copy(b, code)
	copy(b[len(code):], url)
	s.recs[i] = lruRec{hash: h, deadline: deadline, expires: expires, off: off,
		dlen: uint16(dlen), clen: uint8(len(code)), redirect: redirect}
	s.n++
	if uint32(s.n) > (s.imask+1)/2 { // never with the whole index in use: n <= limit <= len(index)/2
		s.grow()
	}
	s.place(h, uint32(i)+1)
	s.pushFront(i)
}

// place files record index v (+1) under hash h, in the first free slot of
// its probe sequence in the index in use.
func (s *lruShard) place(h uint64, v uint32) {
	mask := s.imask
	j := uint32(h>>32) & mask
	for s.index[j] != 0 {
		j = (j + 1) & mask
	}
	s.index[j] = v
}

// grow doubles the index in use and files every entry on the recency list
// again (the one being added is not on it yet). A shard's index starts at
// minIndex slots and doubles whenever it would be more than half full, up
// to the whole index, and shrinks only when the shard is purged. So a shard
// holding few entries looks them up in an index of a few cache lines and
// pages, not in one sized for its limit (10,000 links in a cache of the
// default 100,000 were spread over 1 MiB of index, every lookup a cache
// miss; the dense index took about 0.6 µs less CPU per redirect under wrk),
// and the pages it never reached are never resident. The rehash is
// O(entries) under the shard's lock, once per doubling.
func (s *lruShard) grow() {
	s.imask = s.imask*2 + 1
	clear(s.index[:s.imask+1])
	for j := s.head; j >= 0; j = s.recs[j].next {
		s.place(s.recs[j].hash, uint32(j)+1)
	}
}

// remove drops code's entry, if any.
func (l *lru) remove(code string) {
	h := maphash.String(l.seed, code)
	s := l.shard(h)
	s.mu.Lock()
	if slot, i, ok := s.find(h, code); ok {
		s.remove(slot, i)
	}
	s.mu.Unlock()
}

// purge drops every entry.
func (l *lru) purge() {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.reset()
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
		n += int(s.n)
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
		for j := s.head; j >= 0; j = s.recs[j].next {
			if r := &s.recs[j]; now <= r.deadline {
				out = append(out, strings.Clone(s.code(r)))
			}
		}
		s.mu.Unlock()
	}
	return out
}

// slotClass is the free-list class of a slot for n bytes: slots of class k
// are (k+1)*slotUnit bytes.
func slotClass(n int) int { return (n - 1) / slotUnit }

// allocData returns the offset (in slotUnit) of a free slot for n bytes: a
// free slot of its class, new space, or, when the arena is used up, a free
// slot of a larger class (it goes back to n's class when freed, wasting the
// difference but never overrunning).
func (s *lruShard) allocData(n int) (uint32, bool) {
	k := slotClass(n)
	if off, ok := s.popFree(k); ok {
		return off, true
	}
	if units := uint32(k + 1); int(s.top+units)*slotUnit <= len(s.data) {
		off := s.top
		s.top += units
		return off, true
	}
	for j := k + 1; j < nClasses; j++ {
		if off, ok := s.popFree(j); ok {
			return off, true
		}
	}
	return 0, false
}

func (s *lruShard) popFree(k int) (uint32, bool) {
	f := s.free[k]
	if f == 0 {
		return 0, false
	}
	off := f - 1
	s.free[k] = *(*uint32)(unsafe.Pointer(&s.data[int(off)*slotUnit]))
	return off, true
}

// evictTail removes the least recently used entry. Called with s.n > 0.
func (s *lruShard) evictTail() {
	i := s.tail
	slot, _, _ := s.find(s.recs[i].hash, s.code(&s.recs[i]))
	s.remove(slot, i)
}

// remove deletes record i (at index slot): from the index (shifting the
// probe sequence back over the hole), the recency list, its data slot and
// the record itself go back to their free lists.
func (s *lruShard) remove(slot uint32, i int32) {
	mask := s.imask
	hole := slot
	for j := (hole + 1) & mask; s.index[j] != 0; j = (j + 1) & mask {
		home := uint32(s.recs[s.index[j]-1].hash>>32) & mask
		// Move j into the hole unless its home lies cyclically in (hole, j].
		if (j > hole && (home <= hole || home > j)) || (j < hole && home <= hole && home > j) {
			s.index[hole] = s.index[j]
			hole = j
		}
	}
	s.index[hole] = 0

	s.unlink(i)
	r := &s.recs[i]
	k := slotClass(int(r.dlen))
	*(*uint32)(unsafe.Pointer(&s.data[int(r.off)*slotUnit])) = s.free[k]
	s.free[k] = r.off + 1
	*r = lruRec{next: s.freeRec}
	s.freeRec = i
	s.n--
}

func (s *lruShard) unlink(i int32) {
	r := &s.recs[i]
	if r.prev >= 0 {
		s.recs[r.prev].next = r.next
	} else {
		s.head = r.next
	}
	if r.next >= 0 {
		s.recs[r.next].prev = r.prev
	} else {
		s.tail = r.prev
	}
	r.prev, r.next = -1, -1
}

func (s *lruShard) pushFront(i int32) {
	r := &s.recs[i]
	r.prev, r.next = -1, s.head
	if s.head >= 0 {
		s.recs[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}
