package quiesce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/linkgate/linkgate/internal/testenv"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := ListenTCP(context.Background(), "127.0.0.1:0")
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
	if res.Queued != 3 || res.Left != 0 || !res.Fenced {
		t.Errorf("result %+v, want 3 queued when Close began, 0 left, fenced", res)
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

// While Close waits, the kernel starts no handshake: a client dialling then
// is not connected (its SYN is dropped; it is refused once the socket has
// closed), so nothing joins the queue that the close could reset.
func TestCloseFencesNewHandshakes(t *testing.T) {
	inner := listen(t)
	dialQueued(t, inner, 1)
	l := New(inner, 5*time.Second)
	var during error
	l.waiting = func() {
		c, err := net.DialTimeout("tcp", inner.Addr().String(), 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
		during = err
		go serve(l)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	res := l.Result()
	t.Logf("result %+v; dial while Close waited: %v", res, during)
	if !res.Fenced || res.Left != 0 {
		t.Errorf("result %+v, want fenced, 0 left", res)
	}
	var ne net.Error
	if !errors.As(during, &ne) || !ne.Timeout() {
		t.Errorf("dial while Close waited: %v, want a timeout (SYN dropped)", during)
	}
}

// A handshake under way when Close begins (the client's ACK not yet sent) is
// waited for: the connection completes, is accepted and answered. Unfenced,
// Close would find the accept queue empty and close at once, and the client
// would be reset once it completed. The client's socket drops every segment
// until Close is waiting, so the server's SYN-ACK goes unanswered until the
// kernel sends it again (after about a second).
func TestCloseWaitsForHandshakeUnderWay(t *testing.T) {
	inner := listen(t)
	port := inner.Addr().(*net.TCPAddr).Port
	fd := halfOpen(t, "127.0.0.1", port)
	testenv.WaitFor(t, 2*time.Second, "a handshake under way", func() bool {
		h, err := handshakes(port)
		return err == nil && h == 1
	})

	l := New(inner, 10*time.Second)
	go serve(l)
	l.waiting = func() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0); err != nil {
			t.Error(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	res := l.Result()
	t.Logf("result %+v", res)
	if !res.Fenced || res.Queued != 1 || res.Left != 0 {
		t.Errorf("result %+v, want fenced, 1 queued when Close began, 0 left", res)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 3000); n != 1 || err != nil {
		t.Fatalf("connect did not complete: poll %d, %v", n, err)
	}
	if soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
		t.Fatalf("connect: %v, %v", syscall.Errno(soErr), err)
	}
	dup, err := unix.Dup(fd) // fd is halfOpen's to close
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "client")
	c, err := net.FileConn(f) // a dup of its own
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := readLine(t, c); err != nil || line != "pong\n" {
		t.Fatalf("connection whose handshake was under way: %q, %v; want pong", line, err)
	}
}

// halfOpen starts a handshake with ip:port that stays under way: the
// client's socket drops every segment, the server's SYN-ACK included, until
// its filter is detached (SO_DETACH_FILTER); the kernel then completes the
// handshake when the server sends its SYN-ACK again.
func halfOpen(t *testing.T, ip string, port int) int {
	t.Helper()
	addr := net.ParseIP(ip)
	var (
		sa     unix.Sockaddr
		family = unix.AF_INET
	)
	if v4 := addr.To4(); v4 != nil {
		sa = &unix.SockaddrInet4{Addr: [4]byte(v4), Port: port}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte(addr.To16()), Port: port}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	dropAll := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &dropAll[0]}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, sa); !errors.Is(err, unix.EINPROGRESS) {
		t.Fatalf("connect: %v, want EINPROGRESS", err)
	}
	return fd
}

// handshakes counts SYN_RECV sockets of the given local port only, IPv4 and
// IPv6, and not established connections. The first listener is bound as
// linkgate's default address is (":port"): dual-stack where the machine has
// IPv6, and an IPv4 client's handshake is then an IPv6 socket's.
func TestHandshakesCountsThePortsHalfOpenConnections(t *testing.T) {
	a, err := ListenTCP(context.Background(), ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b := listen(t)
	pa, pb := a.Addr().(*net.TCPAddr).Port, b.Addr().(*net.TCPAddr).Port
	// Runs after halfOpen's cleanups have closed the clients: their
	// handshakes end when the servers send their SYN-ACKs again (about a
	// second), and must not be counted by a later test given the same port.
	t.Cleanup(func() {
		testenv.WaitFor(t, 5*time.Second, "the half-open handshakes to end", func() bool {
			ha, erra := handshakes(pa)
			hb, errb := handshakes(pb)
			return erra == nil && errb == nil && ha+hb == 0
		})
	})
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", pa), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // established, in the accept queue
	halfOpen(t, "127.0.0.1", pa)
	halfOpen(t, "127.0.0.1", pa)
	halfOpen(t, "127.0.0.1", pb)
	want := 2
	if a.Addr().(*net.TCPAddr).IP.To4() == nil {
		halfOpen(t, "::1", pa)
		want++
	} else {
		t.Logf("%v is IPv4 only: no IPv6 case", a.Addr())
	}
	testenv.WaitFor(t, 2*time.Second, fmt.Sprintf("%d handshakes to port %d", want, pa), func() bool {
		h, err := handshakes(pa)
		if err != nil {
			t.Fatal(err)
		}
		return h == want
	})
	if h, err := handshakes(pb); err != nil || h != 1 {
		t.Fatalf("handshakes to the other port: %d, %v; want 1", h, err)
	}
}

// A fenced Close waits for the queue to stay empty for settle, even when it
// was empty at the first look (what a SYN being processed as the filter was
// attached would join); unfenced, an empty queue closes at once.
func TestCloseOfIdleListenerSettles(t *testing.T) {
	l := New(listen(t), time.Second)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if res := l.Result(); !res.Fenced || res.Queued != 0 || res.Waited < settle || l.looks < 2 {
		t.Fatalf("result %+v after %d looks, want fenced, 0 queued, a wait of at least %v and a second look", res, l.looks, settle)
	}
}

// Go's default listener is MPTCP where the kernel has it, and Linux accepts
// no socket filter there: Close then waits for the accept queue alone.
func TestCloseOfMPTCPListenerIsUnfenced(t *testing.T) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	inner, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	if proto := protocolOf(t, inner); proto != unix.IPPROTO_MPTCP {
		t.Skipf("the kernel gave a socket of protocol %d, not MPTCP", proto)
	}
	conns := dialQueued(t, inner, 1)
	l := New(inner, 5*time.Second)
	l.waiting = func() { go serve(l) }
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if res := l.Result(); res.Fenced || res.Queued != 1 || res.Left != 0 {
		t.Errorf("result %+v, want unfenced, 1 queued, 0 left", res)
	}
	if line, err := readLine(t, conns[0]); err != nil || line != "pong\n" {
		t.Fatalf("queued connection: %q, %v; want pong", line, err)
	}
}

func protocolOf(t *testing.T, ln net.Listener) int {
	t.Helper()
	rc, err := rawConnOf(ln)
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var perr error
	if err := rc.Control(func(fd uintptr) { proto, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) }); err != nil {
		t.Fatal(err)
	}
	if perr != nil {
		t.Fatal(perr)
	}
	return proto
}

// ListenTCP's socket is plain TCP, which a filter can fence.
func TestListenTCPIsPlainTCP(t *testing.T) {
	if proto := protocolOf(t, listen(t)); proto != unix.IPPROTO_TCP {
		t.Fatalf("ListenTCP's socket has protocol %d, want TCP (%d)", proto, unix.IPPROTO_TCP)
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
