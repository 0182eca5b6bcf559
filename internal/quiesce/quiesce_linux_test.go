package quiesce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/testenv"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialQueued opens n connections that each send "ping\n", and waits until
// the kernel holds all n in ln's accept queue (nobody accepts them).
func dialQueued(t *testing.T, ln net.Listener, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testenv.WaitFor(t, 2*time.Second, "connections in the accept queue", func() bool {
		q, err := queueLenOf(ln)
		return err == nil && q == n
	})
	return conns
}

// serve accepts on ln until it is closed, answering each "ping" line with
// "pong" and each later line with itself.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "ping\n" {
					line = "pong\n"
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
}

func readLine(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

// The problem: closing a listener resets the connections in its queue, after
// their clients have sent a request.
func TestCloseResetsQueuedConnections(t *testing.T) {
	ln := listen(t)
	conns := dialQueued(t, ln, 3)
	ln.Close()
	for i, c := range conns {
		if _, err := readLine(t, c); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("queued connection %d after a plain close: %v, want a reset", i, err)
		}
	}
}

// With Close waiting for the queue: the queued connections are accepted and
// answered (a plain close resets them, above), they keep working after the
// close, and a client is refused afterwards.
func TestCloseAcceptsQueuedConnectionsFirst(t *testing.T) {
	inner := listen(t)
	conns := dialQueued(t, inner, 3)
	l := New(inner, 5*time.Second)
	// The server accepts nothing until Close is waiting, as a server whose
	// accept loop is not scheduled yet.
	waiting := make(chan struct{})
	l.waiting = func() { close(waiting) }
	go func() { <-waiting; serve(l) }()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	res := l.Result()
	t.Logf("result %+v", res)
	if res.Queued != 3 || res.Left != 0 {
		t.Errorf("result %+v, want 3 queued when Close began and 0 left", res)
	}
	for i, c := range conns {
		if line, err := readLine(t, c); err != nil || line != "pong\n" {
			t.Fatalf("queued connection %d: %q, %v; want pong", i, line, err)
		}
		if _, err := c.Write([]byte("again\n")); err != nil {
			t.Fatal(err)
		}
		if line, err := readLine(t, c); err != nil || line != "again\n" {
			t.Fatalf("connection %d after the close: %q, %v", i, line, err)
		}
	}
	if _, err := net.DialTimeout("tcp", inner.Addr().String(), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after close: %v, want connection refused", err)
	}
	if err := l.Close(); err == nil {
		t.Error("a second Close succeeded; want the closed socket's error")
	}
}

// Nobody accepting: Close gives up after maxWait and says what was left.
func TestCloseWaitsAtMostMaxWait(t *testing.T) {
	inner := listen(t)
	conns := dialQueued(t, inner, 2)
	l := New(inner, 50*time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if res := l.Result(); res.Queued != 2 || res.Left != 2 || res.Waited < 50*time.Millisecond {
		t.Fatalf("result %+v, want 2 queued, 2 left, after 50ms", res)
	}
	if _, err := readLine(t, conns[0]); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection left in the queue: %v, want a reset", err)
	}
}

// A listener whose queue cannot be read closes at once, with unknown counts.
func TestCloseOfOtherListeners(t *testing.T) {
	f := &fakeListener{}
	l := New(f, time.Hour)
	if err := l.Close(); err != nil || !f.closed {
		t.Fatalf("Close: %v, inner closed %v", err, f.closed)
	}
	if res := l.Result(); res.Queued != -1 || res.Left != -1 {
		t.Fatalf("result %+v, want unknown (-1) counts", res)
	}
	if _, err := queueLenOf(f); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("queueLenOf: %v, want ErrUnsupported", err)
	}
}

type fakeListener struct {
	net.Listener
	closed bool
}

func (f *fakeListener) Close() error { f.closed = true; return nil }

// fasthttp's Serve ends quietly (nil, nothing logged) when its shutdown
// closes the wrapped listener: the socket is shut down before it is closed,
// and Accept's error must still read as a closed listener.
func TestFasthttpServeEndsQuietly(t *testing.T) {
	inner := listen(t)
	l := New(inner, time.Second)
	logs := &logRecorder{}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) },
		Logger:  logs,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	testenv.WaitFor(t, 5*time.Second, "the server to answer", func() bool {
		code, _, err := fasthttp.Get(nil, "http://"+inner.Addr().String()+"/")
		return err == nil && code == fasthttp.StatusNoContent
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.ShutdownWithContext(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after the shutdown")
	}
	if res := l.Result(); res.Queued < 0 {
		t.Errorf("result %+v: the queue was never read", res)
	}
	if got := logs.lines(); len(got) > 0 {
		t.Errorf("fasthttp logged %q", got)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

type logRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *logRecorder) Printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf(format, args...))
}

func (r *logRecorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// Between the shutdown and the close, accept fails with an invalid argument;
// the wrapper reports a closed listener, in the terms servers look for.
func TestAcceptAfterShutdownReadsClosed(t *testing.T) {
	l := New(listen(t), time.Second)
	l.closing.Store(true)
	if err := stopListening(l.rc); err != nil {
		t.Fatal(err)
	}
	_, err := l.Accept()
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, syscall.EINVAL) ||
		!strings.HasPrefix(err.Error(), "use of closed network connection") {
		t.Fatalf("Accept after shutdown: %v; want net.ErrClosed first, wrapping EINVAL", err)
	}
}

// queueLenOf returns how many connections the kernel has completed for ln
// that the server has not accepted yet.
func queueLenOf(ln net.Listener) (int, error) {
	rc, err := rawConnOf(ln)
	if err != nil {
		return 0, err
	}
	return queueLen(rc)
}
