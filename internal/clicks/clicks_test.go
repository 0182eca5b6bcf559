package clicks

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

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
