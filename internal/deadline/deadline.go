// Package deadline gives a server's connections read and write deadlines
// that cost almost nothing to move.
//
// fasthttp moves a keep-alive connection's deadlines three times per
// request: the idle timeout before it waits for the next request, the read
// timeout once its first byte is in, the write timeout before the response.
// Each move is a call into Go's runtime poller that re-files a timer; under
// wrk on a 2-core machine the three took about 3% of linkgate's CPU per
// redirect (perf), 0.5-0.8 µs. Almost none of those deadlines matters. A
// deadline acts only on a Read or Write that blocks, and a request's header
// usually arrives in the same read that ended the idle wait, so the read
// timeout set after it is replaced before any call could block on it.
//
// A Conn therefore records a new deadline and hands it to the socket only
// when it matters: at the start of a Read or Write (one is starting that the
// deadline must bound), or at once when a call is already under way (so that
// a deadline set to interrupt it does). And it does not move the socket's
// deadline later by less than its slack, since fasthttp sets each timeout
// anew for every request: a connection answering requests back to back moves
// its socket's deadlines about once per slack, not three times per request.
// The price is that a deadline may take effect up to slack early, never late;
// the server's wiring sets slack to a tenth of its shortest timeout.
//
// Neither fasthttp nor Fiber has an option for this, and we found no library
// that does it, so it is written here.
package deadline

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listener returns ln with every accepted connection wrapped in a Conn
// with the given slack. Accept's errors are ln's, unchanged (servers read
// them to tell a closed listener from a failed accept).
func Listener(ln net.Listener, slack time.Duration) net.Listener {
	return &listener{Listener: ln, slack: slack}
}

type listener struct {
	net.Listener
	slack time.Duration
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c, l.slack), nil
}

// Conn is a net.Conn whose deadlines reach the socket only when a Read or
// Write could be bounded by them (see the package doc). Safe for concurrent
// use, as net.Conn requires.
type Conn struct {
	net.Conn
	slack       time.Duration
	read, write side
}

// side is the state of one direction's deadline.
type side struct {
	mu      sync.Mutex
	want    time.Time // the deadline last set; zero: none
	have    time.Time // the deadline the socket has
	applied int       // deadlines handed to the socket, for tests
	// calls counts the Reads (or Writes) under way. It goes up under mu,
	// before the call, so that set sees every call that may be waiting; it
	// goes down without mu, after the call (set may then apply a deadline
	// to a call that has just ended, which is harmless).
	calls atomic.Int32
}

// New wraps c; it must not be used directly afterwards. slack is how much
// earlier than set a deadline may take effect (0: exactly when set, which
// still saves the moves no call waits on).
func New(c net.Conn, slack time.Duration) *Conn {
	return &Conn{Conn: c, slack: max(slack, 0)}
}

// SetReadDeadline records t for the next Read, and applies it at once to a
// Read under way.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.set(&c.read, t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline records t for the next Write, and applies it at once to a
// Write under way.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.write, t, c.Conn.SetWriteDeadline)
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Read reads from the connection, bounded by the read deadline last set
// (or one at most slack before it).
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.begin(&c.read, c.Conn.SetReadDeadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	c.end(&c.read)
	return n, err
}

// Write writes to the connection, bounded by the write deadline last set
// (or one at most slack before it).
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.begin(&c.write, c.Conn.SetWriteDeadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	c.end(&c.write)
	return n, err
}

// set records t; with a call under way it applies t exactly, since that call
// was bounded by the old deadline and may be waiting on it.
func (c *Conn) set(s *side, t time.Time, apply func(time.Time) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.want = t
	if s.calls.Load() == 0 || t.Equal(s.have) {
		return nil
	}
	return s.apply(apply)
}

// begin hands the socket the deadline last set before a call, unless the
// socket's own is at most slack before it, and counts the call.
func (c *Conn) begin(s *side, apply func(time.Time) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.stale(s) {
		if err := s.apply(apply); err != nil {
			return err
		}
	}
	s.calls.Add(1)
	return nil
}

func (c *Conn) end(s *side) { s.calls.Add(-1) }

// stale reports whether the socket's deadline must change before a call: it
// differs from the one set, other than by being at most slack earlier. The
// slack applies only between deadlines read off the monotonic clock
// (time.Now().Add, as fasthttp sets them): two wall-clock times are a fixed
// distance apart only while nobody sets the system clock.
func (c *Conn) stale(s *side) bool {
	if s.want.Equal(s.have) {
		return false
	}
	if s.want.IsZero() || s.have.IsZero() || !monotonic(s.want) || !monotonic(s.have) || s.want.Before(s.have) {
		return true
	}
	return s.want.Sub(s.have) > c.slack
}

// monotonic reports whether t carries a monotonic clock reading, which
// Round(0) strips.
func monotonic(t time.Time) bool { return t != t.Round(0) }

// apply gives the socket the deadline last set. s.mu is held.
func (s *side) apply(apply func(time.Time) error) error {
	if err := apply(s.want); err != nil {
		return err
	}
	s.have = s.want
	s.applied++
	return nil
}
