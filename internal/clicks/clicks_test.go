package clicks

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/linkgate/linkgate/internal/testenv"
)

// memSink is an in-memory Sink for testing the Counter's own logic; the
// store's AddClicks is covered by the store conformance suite and the
// end-to-end click test.
type memSink struct {
	mu     sync.Mutex
	total  map[string]int64
	fail   bool
	called int
}

func (s *memSink) AddClicks(_ context.Context, counts map[string]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.called++
	if s.fail {
		return errors.New("sink down")
	}
	for k, v := range counts {
		s.total[k] += v
	}
	return nil
}

func (s *memSink) get(code string) int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.total[code] }

func TestConcurrentAddsAreAllFlushed(t *testing.T) {
	sink := &memSink{total: map[string]int64{}}
	c, err := New(Config{Sink: sink, Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				c.Add("abc")
			}
		}()
	}
	wg.Wait()
	cancel()
	<-done
	if got := sink.get("abc"); got != 8000 {
		t.Fatalf("flushed %d clicks, want 8000", got)
	}
}

func TestFailedFlushIsRetried(t *testing.T) {
	sink := &memSink{total: map[string]int64{}, fail: true}
	c, _ := New(Config{Sink: sink})
	c.Add("x")
	c.Add("x")
	if err := c.Flush(context.Background()); err == nil {
		t.Fatal("flush to a failing sink returned nil")
	}
	if n := c.Pending("x"); n != 2 {
		t.Fatalf("pending after failed flush = %d, want 2", n)
	}
	c.Add("x")
	sink.mu.Lock()
	sink.fail = false
	sink.mu.Unlock()
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := c.Pending("x"); sink.get("x") != 3 || n != 0 {
		t.Fatalf("after retry: stored %d pending %d, want 3 and 0", sink.get("x"), n)
	}
}

func TestRunFlushesPeriodically(t *testing.T) {
	sink := &memSink{total: map[string]int64{}}
	c, _ := New(Config{Sink: sink, Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	c.Add("p")
	testenv.WaitFor(t, 2*time.Second, "periodic flush", func() bool { return sink.get("p") == 1 })
}

func TestSinkRequired(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Sink returned nil error")
	}
}

// TestCodesOfEveryLengthAreCountedApart: codes on both sides of the inline
// key's limit, and codes that differ only by trailing NUL bytes or by
// length, keep their own counts through a flush, a failed flush and its
// retry, and reach the sink under their exact strings.
func TestCodesOfEveryLengthAreCountedApart(t *testing.T) {
	sink := &memSink{total: map[string]int64{}, fail: true}
	c, _ := New(Config{Sink: sink})
	long := "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01" // 64, the longest alias
	codes := []string{"a", "a\x00", "a\x00\x00", "ab", long[:maxInline-1], long[:maxInline], long[:maxInline] + "\x00",
		long[:maxInline+1], long[:maxInline+2], long}
	want := map[string]int64{}
	for i, code := range codes {
		for range i + 1 {
			c.Add(code)
		}
		want[code] = int64(i + 1)
	}
	if err := c.Flush(context.Background()); err == nil {
		t.Fatal("flush to a failing sink returned nil")
	}
	for _, code := range codes {
		c.Add(code) // after the failed flush: added to the counts put back
		want[code]++
		if got := c.Pending(code); got != want[code] {
			t.Errorf("pending %q (%d bytes) = %d, want %d", code, len(code), got, want[code])
		}
	}
	sink.mu.Lock()
	sink.fail = false
	sink.mu.Unlock()
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.total) != len(want) {
		t.Errorf("sink got %d codes, want %d: %v", len(sink.total), len(want), sink.total)
	}
	for code, n := range want {
		if sink.total[code] != n {
			t.Errorf("sink %q (%d bytes) = %d, want %d", code, len(code), sink.total[code], n)
		}
	}
}

// TestAddKeepsNoShortCode: a code of up to maxInline bytes is copied, so a
// caller may pass a view of a buffer it reuses, and counting a code already
// pending allocates nothing.
func TestAddKeepsNoShortCode(t *testing.T) {
	sink := &memSink{total: map[string]int64{}}
	c, _ := New(Config{Sink: sink})
	buf := []byte("Ab3dE9x")
	c.Add(unsafe.String(&buf[0], len(buf)))
	copy(buf, "zzzzzzz")
	if allocs := testing.AllocsPerRun(100, func() { c.Add("Ab3dE9x") }); allocs != 0 {
		t.Errorf("Add of a pending code: %v allocations, want 0", allocs)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, other := sink.get("Ab3dE9x"), sink.get("zzzzzzz"); got != 102 || other != 0 {
		t.Fatalf("flushed Ab3dE9x %d, zzzzzzz %d; want 102 and 0", got, other)
	}
}

// TestShardFillsACacheLine: shards stay on cache lines of their own (their
// locks are taken by redirects on different cores), which the padding
// promises only while the fields above it add up to what it assumes.
func TestShardFillsACacheLine(t *testing.T) {
	if n := unsafe.Sizeof(counterShard{}); n != 64 {
		t.Fatalf("counterShard is %d bytes, want 64: adjust its padding", n)
	}
}
