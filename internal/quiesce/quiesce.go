package quiesce

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener is a net.Listener whose first Close waits, at most maxWait, for
// the server to accept every connection the kernel has completed, and then
// closes the socket at once. The server must keep accepting until Close
// returns (fasthttp's and net/http's shutdowns close the listener while their
// accept loop still runs). Later calls to Close only close.
type Listener struct {
	net.Listener
	maxWait time.Duration
	rc      syscall.RawConn // nil when the queue cannot be read

	closing atomic.Bool // Close has begun: Accept's errors are net.ErrClosed

	mu  sync.Mutex // serialises Close; guards res
	res Result

	waiting func() // tests: called when Close first finds the queue not empty
}

// Result is what the first Close found.
type Result struct {
	Queued int           // connections in the accept queue when Close began (-1: unknown)
	Left   int           // connections still queued when the socket closed (-1: unknown)
	Waited time.Duration // how long Close waited before closing
}

// DefaultMaxWait is the bound linkgate gives Close: the queue normally
// empties in microseconds, and a second means the accept loop is not running.
const DefaultMaxWait = time.Second

// New wraps ln; maxWait bounds the wait in Close.
func New(ln net.Listener, maxWait time.Duration) *Listener {
	l := &Listener{Listener: ln, maxWait: maxWait, res: Result{Queued: -1, Left: -1}}
	if rc, err := rawConnOf(ln); err == nil {
		if _, err := queueLen(rc); err == nil {
			l.rc = rc
		}
	}
	return l
}

// Close waits for the accept queue to empty (the first time), then closes.
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

// pollEvery is how often drain looks at the queue while it is not empty.
const pollEvery = 200 * time.Microsecond

// drain polls the accept queue until it is empty or maxWait has passed, then
// marks the listener closing and shuts the socket down. It runs under l.mu,
// once, from the first Close.
func (l *Listener) drain() Result {
	start := time.Now()
	res := Result{Queued: -1, Left: -1}
	for {
		n, err := queueLen(l.rc)
		if err != nil {
			return res // closed under us or not listening: nothing to wait for
		}
		if res.Queued < 0 {
			res.Queued = n
		}
		res.Left, res.Waited = n, time.Since(start)
		if n == 0 || res.Waited >= l.maxWait {
			// Stop listening now: closing the socket waits for the accept
			// loop to wake and let go of it, and a handshake completing
			// meanwhile would be reset. (Close follows either way.)
			l.closing.Store(true)
			_ = stopListening(l.rc)
			return res
		}
		if l.waiting != nil {
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
