package logsink

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func TestLinesNeverInterleave(t *testing.T) {
	var out lockedBuffer
	s := New(&out, 256, time.Hour) // a small buffer: lines straddle flushes
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				fmt.Fprintf(s, "{\"g\":%d,\"i\":%d,\"pad\":%q}\n", g, i, strings.Repeat("x", i%97))
			}
		}()
	}
	wg.Wait()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4000 {
		t.Fatalf("%d lines, want 4000", len(lines))
	}
	next := make(map[int]int) // per goroutine, the i its next line must have
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"g":`) || !strings.HasSuffix(l, `"}`) {
			t.Fatalf("torn line %q", l)
		}
		var g, i int
		if _, err := fmt.Sscanf(l, `{"g":%d,"i":%d,`, &g, &i); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: line %d written where line %d was due: lines out of order", g, i, next[g])
		}
		next[g]++
	}
}

// blockingWriter blocks every Write until release is closed, after telling
// entered.
type blockingWriter struct {
	lockedBuffer
	entered chan struct{}
	release chan struct{}
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.lockedBuffer.Write(p)
}

// TestWritesDoNotWaitForTheSystemCall: while a full buffer is being written
// (the underlying writer blocked), other goroutines' lines are still taken.
func TestWritesDoNotWaitForTheSystemCall(t *testing.T) {
	out := &blockingWriter{entered: make(chan struct{}, 4), release: make(chan struct{})}
	s := New(out, 64, time.Hour)
	fmt.Fprintf(s, "%s\n", strings.Repeat("a", 50))
	go fmt.Fprintf(s, "%s\n", strings.Repeat("b", 50)) // fills the buffer: writes the a line
	<-out.entered
	done := make(chan struct{})
	go func() {
		defer close(done)
		fmt.Fprintln(s, "c") // lands in the new buffer beside the b line
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a Write waited for the underlying write of another buffer")
	}
	close(out.release)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("a", 50) + "\n" + strings.Repeat("b", 50) + "\nc\n"
	if got := out.String(); got != want {
		t.Fatalf("written %q, want %q", got, want)
	}
}

func TestRunFlushesPeriodicallyAndAtTheEnd(t *testing.T) {
	var out lockedBuffer
	s := New(&out, 0, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	fmt.Fprintln(s, "first")
	testenv.WaitFor(t, 2*time.Second, "the periodic flush", func() bool { return out.String() == "first\n" })
	fmt.Fprintln(s, "last")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\nlast\n" {
		t.Fatalf("after Run returned: %q", out.String())
	}
}

type failOnce struct {
	lockedBuffer
	failed bool
}

func (f *failOnce) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, fmt.Errorf("disk full")
	}
	return f.lockedBuffer.Write(p)
}

func TestWriteErrorDoesNotSilenceLogging(t *testing.T) {
	out := &failOnce{}
	s := New(out, 16, time.Hour)
	fmt.Fprintln(s, "lost line that fills the buffer")
	_ = s.Flush()
	fmt.Fprintln(s, "later")
	if err := s.Flush(); err != nil {
		t.Fatalf("flush after a failed write: %v", err)
	}
	if !strings.Contains(out.String(), "later") {
		t.Fatalf("logging stayed silent after one failed write: %q", out.String())
	}
}
