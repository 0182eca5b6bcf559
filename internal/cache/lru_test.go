package cache

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/linkgate/linkgate/internal/links"
)

func lruGet(l *lru, code string) (string, bool) {
	v, owned, ok := l.get(code)
	if ok && owned != code {
		panic("owned code " + owned + " for " + code)
	}
	return v.url, ok
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	l := newLRU(3, time.Hour)
	if len(l.shards) != 1 {
		t.Fatalf("%d shards for 3 entries, want 1 (exact LRU)", len(l.shards))
	}
	for _, c := range []string{"a", "b", "c"} {
		l.add(c, lruValue{url: "u" + c})
	}
	if _, ok := lruGet(l, "a"); !ok { // a is now the most recent; b the least
		t.Fatal("a missing")
	}
	l.add("d", lruValue{url: "ud"})
	if _, ok := lruGet(l, "b"); ok {
		t.Fatal("b survived; it was the least recently used")
	}
	for _, c := range []string{"a", "c", "d"} {
		if u, ok := lruGet(l, c); !ok || u != "u"+c {
			t.Fatalf("%s = %q, %v", c, u, ok)
		}
	}
	// Replacing keeps one entry and refreshes it.
	l.add("c", lruValue{url: "uc2"})
	if u, _ := lruGet(l, "c"); u != "uc2" || l.len() != 3 {
		t.Fatalf("c = %q, len %d", u, l.len())
	}
	l.remove("a")
	l.remove("nothere")
	if l.contains("a") || l.len() != 2 {
		t.Fatalf("after remove: contains a %v, len %d", l.contains("a"), l.len())
	}
	// The freed entry is reused.
	l.add("e", lruValue{url: "ue"})
	if got := slices.Sorted(slices.Values(l.keys())); !slices.Equal(got, []string{"c", "d", "e"}) {
		t.Fatalf("keys %v", got)
	}
	if used := l.shards[0].used; used != 3 {
		t.Fatalf("%d entries handed out, want 3 (the removed one reused)", used)
	}
	l.purge()
	if l.len() != 0 || l.contains("c") {
		t.Fatal("purge left entries")
	}
}

func TestLRUDeadline(t *testing.T) {
	l := newLRU(10, time.Hour)
	l.add("a", lruValue{url: "ua"})
	l.shards[0].at(l.shards[0].m["a"]).deadline = l.now() - 1 // as if an hour passed
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
	l := newLRU(size, time.Hour)
	if len(l.shards) < 2 {
		t.Fatalf("%d shards for %d entries", len(l.shards), size)
	}
	for i := range 3 * size {
		l.add(fmt.Sprintf("code%07d", i), lruValue{url: "u"})
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
	l := newLRU(20_000, time.Hour) // several shards
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20_000 {
				c := fmt.Sprintf("c%d", (i*7+g)%30_000)
				if u, ok := lruGet(l, c); ok && u != "u"+c {
					t.Errorf("%s = %q", c, u)
					return
				}
				l.add(c, lruValue{url: "u" + c})
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
		if got := valueOf(&want).target("abc"); got != want {
			t.Fatalf("round trip %+v = %+v", want, got)
		}
	}
}

// TestLRUEntrySize pins the entry size the memory target was computed with.
func TestLRUEntrySize(t *testing.T) {
	if n := unsafeSizeofEntry(); n != 64 {
		t.Fatalf("lruEntry is %d bytes, want 64", n)
	}
}

func unsafeSizeofEntry() uintptr { return unsafe.Sizeof(lruEntry{}) }
