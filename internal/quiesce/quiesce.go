package quiesce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener is a net.Listener whose first Close stops new handshakes, waits,
// at most maxWait, for the server to accept every connection the kernel has
// completed or is completing, and then closes the socket at once. The server
// must keep accepting until Close returns (fasthttp's and net/http's
// shutdowns close the listener while their accept loop still runs). Later
// calls to Close only close.
type Listener struct {
	net.Listener
	maxWait time.Duration
	rc      syscall.RawConn // nil when the queue cannot be read
	port    int             // the local port, to find handshakes under way

	closing atomic.Bool // Close has begun: Accept's errors are net.ErrClosed

	mu  sync.Mutex // serialises Close; guards res
	res Result

	waiting func() // tests: called when Close first finds the queue not empty
	looks   int    // tests: how many times Close looked at the queue
}

// Result is what the first Close found. Queued and Left count the accept
// queue and, while they can be counted, the handshakes under way.
type Result struct {
	Queued int           // connections queued when Close began (-1: unknown)
	Left   int           // connections still queued when the socket closed (-1: unknown)
	Waited time.Duration // how long Close waited before closing
	// Fenced: new handshakes were stopped before the wait and those under
	// way were counted at every look. Unfenced, a handshake completing as
	// the socket closed may have been reset.
	Fenced bool
}

// ListenTCP listens on addr ("host:port") with a plain TCP socket, which
// Close can fence. Go listens with MPTCP by default where the kernel has it,
// and Linux accepts no socket filter on an MPTCP socket; linkgate's clients
// (proxies, browsers) speak plain TCP, which an MPTCP listener falls back to
// anyway.
func ListenTCP(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(ctx, "tcp", addr)
}

// DefaultMaxWait is the bound linkgate gives Close: Close normally returns
// within tens of milliseconds (the queue empties in microseconds; each look
// at the handshakes takes a few milliseconds), and a second means the accept
// loop is not running or a client abandoned its handshake.
const DefaultMaxWait = time.Second

// New wraps ln; maxWait bounds the wait in Close.
func New(ln net.Listener, maxWait time.Duration) *Listener {
	l := &Listener{Listener: ln, maxWait: maxWait, res: Result{Queued: -1, Left: -1}}
	if rc, err := rawConnOf(ln); err == nil {
		if _, err := queueLen(rc); err == nil {
			l.rc = rc
			if a, ok := ln.Addr().(*net.TCPAddr); ok {
				l.port = a.Port
			}
		}
	}
	return l
}

// Close fences the socket and waits for the queue to empty (the first time),
// then closes.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closing.Load() && l.rc != nil {
		l.res = l.drain()
	}
	l.closing.Store(true)
	return l.Listener.Close()
}

// Accept is the inner listener's, except that once Close has begun its error
// wraps net.ErrClosed and starts with its text: the socket may be shut down
// (accept then fails with an invalid argument) before it is closed, and
// servers end quietly only on a closed listener (net/http by errors.Is,
// fasthttp by the text "use of closed network connection").
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.closing.Load() {
		return nil, fmt.Errorf("%w (%w)", net.ErrClosed, err)
	}
	return c, err
}

// Result returns what the first Close found; Queued and Left are -1 before
// it, and when the system does not report the queue.
func (l *Listener) Result() Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// pollEvery is how long drain sleeps between looks.
const pollEvery = 200 * time.Microsecond

// settle is how long a fenced listener's queue must stay empty before the
// socket closes. It covers what neither count shows: a SYN that passed the
// filter just before it was attached and is still being processed, a
// connection between leaving the handshake table and joining the accept
// queue (microseconds, both), and the last ACK of a handshake answered with
// a SYN cookie, which the kernel keeps no record of (one round trip: within
// a data centre, well under this).
const settle = 2 * time.Millisecond

// drain fences the socket, polls until no connection is queued or being
// handshaken (for settle, when fenced) or maxWait has passed, then marks the
// listener closing and shuts the socket down. Unfenced, only the accept
// queue is watched, and a handshake completing between the last look and the
// shutdown is reset. It runs under l.mu, once, from the first Close.
func (l *Listener) drain() Result {
	start := time.Now()
	res := Result{Queued: -1, Left: -1}
	// The queue as Close began (the first dump below takes milliseconds, in
	// which the server accepts what was queued).
	first, err := queueLen(l.rc)
	if err != nil {
		return res // closed under us or not listening: nothing to wait for
	}
	filtered := fence(l.rc) == nil
	res.Fenced = filtered
	var emptySince time.Time // zero while something is queued
	for {
		// Handshakes first and the queue last: a handshake that completes
		// while the (slow) dump runs is in the queue when the queue is read,
		// and the shutdown follows that reading at once.
		h := 0
		if filtered {
			var err error
			if h, err = handshakes(l.port); err != nil {
				h, res.Fenced = 0, false // uncounted: the queue alone is watched
			}
		}
		q, err := queueLen(l.rc)
		if err != nil {
			return res // closed under us or not listening: nothing to wait for
		}
		n, now := q+h, time.Now()
		l.looks++
		if res.Queued < 0 {
			res.Queued = first + h
		}
		res.Left, res.Waited = n, now.Sub(start)
		switch {
		case n > 0:
			emptySince = time.Time{}
		case emptySince.IsZero():
			emptySince = now
		}
		done := n == 0 && (!filtered || now.Sub(emptySince) >= settle)
		if done || res.Waited >= l.maxWait {
			// Stop listening now: closing the socket waits for the accept
			// loop to wake and let go of it, and a handshake completing
			// meanwhile would be reset. (Close follows either way.)
			l.closing.Store(true)
			_ = stopListening(l.rc)
			return res
		}
		if n > 0 && l.waiting != nil {
			l.waiting()
			l.waiting = nil
		}
		time.Sleep(pollEvery)
	}
}

// rawConnOf returns ln's socket, or errors.ErrUnsupported for a listener
// that has none.
func rawConnOf(ln net.Listener) (syscall.RawConn, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}
