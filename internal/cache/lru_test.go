package cache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/linkgate/linkgate/internal/links"
)

func lruGet(l *lru, code string) (string, bool) {
	t, ok := l.get(code)
	if ok && t.Code != code {
		panic("code " + t.Code + " for " + code)
	}
	return t.URL, ok
}

func val(url string) *links.Target { return &links.Target{URL: url, Redirect: 302} }

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	l := newLRU(3, time.Hour, 64)
	if len(l.shards) != 1 {
		t.Fatalf("%d shards for 3 entries, want 1 (exact LRU)", len(l.shards))
	}
	for _, c := range []string{"a", "b", "c"} {
		l.add(c, val("u"+c))
	}
	if _, ok := lruGet(l, "a"); !ok { // a is now the most recent; b the least
		t.Fatal("a missing")
	}
	l.add("d", val("ud"))
	if _, ok := lruGet(l, "b"); ok {
		t.Fatal("b survived; it was the least recently used")
	}
	for _, c := range []string{"a", "c", "d"} {
		if u, ok := lruGet(l, c); !ok || u != "u"+c {
			t.Fatalf("%s = %q, %v", c, u, ok)
		}
	}
	// Replacing keeps one entry and refreshes it.
	l.add("c", val("uc2"))
	if u, _ := lruGet(l, "c"); u != "uc2" || l.len() != 3 {
		t.Fatalf("c = %q, len %d", u, l.len())
	}
	l.remove("a")
	l.remove("nothere")
	if l.contains("a") || l.len() != 2 {
		t.Fatalf("after remove: contains a %v, len %d", l.contains("a"), l.len())
	}
	// The freed entry is reused.
	l.add("e", val("ue"))
	if got := slices.Sorted(slices.Values(l.keys())); !slices.Equal(got, []string{"c", "d", "e"}) {
		t.Fatalf("keys %v", got)
	}
	if used := l.shards[0].usedRec; used != 3 {
		t.Fatalf("%d entries handed out, want 3 (the removed one reused)", used)
	}
	l.purge()
	if l.len() != 0 || l.contains("c") {
		t.Fatal("purge left entries")
	}
}

func TestLRUDeadline(t *testing.T) {
	l := newLRU(10, time.Hour, 64)
	l.add("a", val("ua"))
	l.shards[0].recs[l.shards[0].head].deadline = l.now() - 1 // as if an hour passed
	if l.contains("a") {
		t.Fatal("contains a dead entry")
	}
	if l.len() != 1 {
		t.Fatal("contains removed the entry; only get drops")
	}
	if _, ok := lruGet(l, "a"); ok {
		t.Fatal("got a dead entry")
	}
	if l.len() != 0 {
		t.Fatal("get left the dead entry")
	}
	if len(l.keys()) != 0 {
		t.Fatal("keys lists a dead entry")
	}
}

func TestLRUShardsBoundTheTotal(t *testing.T) {
	const size = 100_000
	l := newLRU(size, time.Hour, 64)
	if len(l.shards) < 2 {
		t.Fatalf("%d shards for %d entries", len(l.shards), size)
	}
	for i := range 3 * size {
		l.add(fmt.Sprintf("code%07d", i), val("u"))
	}
	if n := l.len(); n > size+len(l.shards) || n < size*9/10 {
		t.Fatalf("len %d after %d adds into size %d", n, 3*size, size)
	}
	// The most recent ones are all there.
	for i := 3*size - 1000; i < 3*size; i++ {
		if !l.contains(fmt.Sprintf("code%07d", i)) {
			t.Fatalf("recent code %d evicted", i)
		}
	}
}

func TestLRUConcurrent(t *testing.T) {
	l := newLRU(20_000, time.Hour, 64) // several shards
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20_000 {
				c := fmt.Sprintf("c%d", (i*7+g)%30_000)
				if u, ok := lruGet(l, c); ok && u != "u"+c {
					t.Errorf("%s = %q", c, u)
					return
				}
				l.add(c, val("u"+c))
				if i%1000 == 0 {
					l.remove(c)
				}
			}
		})
	}
	wg.Wait()
	if n := l.len(); n > 20_000+len(l.shards) {
		t.Fatalf("len %d", n)
	}
}

func TestLRUValueRoundTrip(t *testing.T) {
	exp := time.Date(2031, 1, 2, 3, 4, 5, 123456000, time.UTC)
	for _, want := range []links.Target{
		{Code: "abc", URL: "https://e.com/", Redirect: 301},
		{Code: "abc", URL: "https://e.com/x", Redirect: 308, ExpiresAt: exp},
	} {
		l := newLRU(10, time.Hour, 64)
		l.add(want.Code, &want)
		if got, ok := l.get(want.Code); !ok || got != want {
			t.Fatalf("round trip %+v = %+v, %v", want, got, ok)
		}
	}
}

// TestLRURecordSize pins the record size the memory target was computed with.
func TestLRURecordSize(t *testing.T) {
	if n := unsafe.Sizeof(lruRec{}); n != 40 {
		t.Fatalf("lruRec is %d bytes, want 40", n)
	}
}

// TestLRUMatchesModel runs random operations against a small lru (one shard,
// a tiny data arena so that slots are reused and the arena runs out) and a
// plain map with a recency list, and compares every answer.
func TestLRUMatchesModel(t *testing.T) {
	const size = 50
	l := newLRU(size, time.Hour, 40)
	type ent struct{ url string }
	model := map[string]ent{}
	var order []string // least recent first
	touch := func(c string) {
		order = slices.DeleteFunc(order, func(o string) bool { return o == c })
		order = append(order, c)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 200_000 {
		c := fmt.Sprintf("c%d", rng.IntN(120))
		switch op := rng.IntN(10); {
		case op < 5:
			u, ok := lruGet(l, c)
			m, mok := model[c]
			if ok != mok || u != m.url {
				t.Fatalf("step %d: get %s = %q, %v; model %q, %v", step, c, u, ok, m.url, mok)
			}
			if ok {
				touch(c)
			}
		case op < 9:
			u := "https://e.com/" + strings.Repeat("x", rng.IntN(300))
			l.add(c, val(u))
			// The model evicts like the lru: least recent until there is room
			// for a record and for the bytes.
			delete(model, c)
			order = slices.DeleteFunc(order, func(o string) bool { return o == c })
			if l.contains(c) { // an add may not cache (no slot fits)
				model[c] = ent{u}
				order = append(order, c)
			}
		default:
			l.remove(c)
			delete(model, c)
			order = slices.DeleteFunc(order, func(o string) bool { return o == c })
		}
		// The lru may hold fewer (its arena filled up) but never more, and
		// what it holds is the most recent of the model's, with their URLs.
		if n := l.len(); n > size || n > len(model) {
			t.Fatalf("step %d: len %d, model %d", step, n, len(model))
		}
		keys := l.keys()
		for _, k := range keys {
			if _, ok := model[k]; !ok {
				t.Fatalf("step %d: lru holds %s, the model does not", step, k)
			}
		}
		// Drop from the model what the lru evicted (its cold end).
		for len(order) > len(keys) {
			delete(model, order[0])
			order = order[1:]
		}
		if got, want := slices.Sorted(slices.Values(keys)), slices.Sorted(slices.Values(order)); !slices.Equal(got, want) {
			t.Fatalf("step %d: lru holds %v, want the %d most recent %v", step, got, len(want), want)
		}
	}
}

// TestLRUIndexGrowsWithEntries: as entries are added, a shard looks them up
// in an index sized for what it holds (at most half full, at most four slots
// per entry beyond the smallest), not for its limit; every entry stays
// findable across the doublings, the whole index is in use when the shard is
// full, and a purge starts it small again. (Removals do not shrink it.)
func TestLRUIndexGrowsWithEntries(t *testing.T) {
	l := newLRU(100_000, time.Hour, 64)
	if len(l.shards) < 2 {
		t.Fatalf("%d shards; the test wants several", len(l.shards))
	}
	check := func(when string) {
		t.Helper()
		for i := range l.shards {
			s := &l.shards[i]
			inUse := int(s.imask) + 1
			if inUse&(inUse-1) != 0 || inUse > len(s.index) {
				t.Fatalf("%s: shard %d uses %d of %d index slots", when, i, inUse, len(s.index))
			}
			if int(s.n) > inUse/2 {
				t.Fatalf("%s: shard %d holds %d entries in %d slots", when, i, s.n, inUse)
			}
			if inUse > max(minIndex, 4*int(s.n)) {
				t.Fatalf("%s: shard %d uses %d slots for %d entries", when, i, inUse, s.n)
			}
		}
	}
	check("empty")
	url := func(i int) string { return fmt.Sprintf("https://e.com/%d", i) }
	added := 0
	for _, upTo := range []int{10, 100, 1_000, 10_000, 40_000} {
		for ; added < upTo; added++ {
			l.add(fmt.Sprintf("c%d", added), val(url(added)))
		}
		check(fmt.Sprintf("%d entries", added))
		for i := range added {
			if u, ok := lruGet(l, fmt.Sprintf("c%d", i)); !ok || u != url(i) {
				t.Fatalf("%d entries: c%d = %q, %v", added, i, u, ok)
			}
		}
	}
	for ; added < 200_000; added++ { // past the limit: every shard full
		l.add(fmt.Sprintf("c%d", added), val(url(added)))
	}
	for i := range l.shards {
		if s := &l.shards[i]; int(s.imask)+1 != len(s.index) {
			t.Fatalf("full shard %d (%d entries) uses %d of %d index slots", i, s.n, s.imask+1, len(s.index))
		}
	}
	for i := added - 1_000; i < added; i++ { // the most recent are all there
		if u, ok := lruGet(l, fmt.Sprintf("c%d", i)); !ok || u != url(i) {
			t.Fatalf("full: c%d = %q, %v", i, u, ok)
		}
	}
	l.purge()
	check("purged")
	for i := range l.shards {
		if s := &l.shards[i]; int(s.imask)+1 != minIndex {
			t.Fatalf("purged shard %d uses %d index slots, want %d", i, s.imask+1, minIndex)
		}
	}
	l.add("again", val(url(1)))
	if u, ok := lruGet(l, "again"); !ok || u != url(1) {
		t.Fatalf("after purge: %q, %v", u, ok)
	}
}

func TestLRULimitsAndNegatives(t *testing.T) {
	l := newLRU(10, time.Hour, 32)
	l.add(strings.Repeat("a", maxL1Code+1), val("https://e.com/"))
	l.add("long", val("https://e.com/"+strings.Repeat("x", 2400)))
	if l.len() != 0 {
		t.Fatal("kept an over-long code or URL")
	}
	neg := newLRU(10, time.Hour, negativeDataPerEntry)
	neg.add("nothere", nil)
	if !neg.contains("nothere") || neg.contains("other") {
		t.Fatal("negative entry not kept")
	}
}

// TestLRUArenaShiftKeepsCaching fills the data arena with short entries,
// then adds long ones: the shard must not be emptied by one add, and must
// end up caching the long ones.
func TestLRUArenaShiftKeepsCaching(t *testing.T) {
	l := newLRU(100, time.Hour, 64) // one shard, 6,400 bytes of slots
	for i := range 100 {
		l.add(fmt.Sprintf("s%03d", i), val("https://e.com/"+strings.Repeat("s", 20)))
	}
	if l.len() != 100 {
		t.Fatalf("len %d after 100 short adds", l.len())
	}
	long := "https://e.com/" + strings.Repeat("l", 200)
	l.add("long0", val(long))
	if n := l.len(); n < 100-16 {
		t.Fatalf("one long add left %d entries", n)
	}
	for i := range 200 {
		c := fmt.Sprintf("long%d", i)
		l.add(c, val(long))
		if u, ok := lruGet(l, c); i >= 20 && (!ok || u != long) {
			t.Fatalf("long entry %d not cached once the arena turned over: %q, %v", i, u, ok)
		}
	}
}
