package deadline

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// pair returns a Conn with the given slack, accepted through Listener from
// a loopback listener, and the client's end of it.
func pair(t *testing.T, slack time.Duration) (*Conn, net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(inner, slack)
	t.Cleanup(func() { _ = ln.Close() })
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*Conn), client
}

func applied(s *side) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// appliedExactly sets read deadline dl on c, reads until it times out (within
// bounds the wait) and fails t if the Read ended before dl or the socket's
// read deadline has not moved moves times in all.
func appliedExactly(t *testing.T, c *Conn, dl time.Time, within time.Duration, moves int) {
	t.Helper()
	if err := c.SetReadDeadline(dl); err != nil {
		t.Fatal(err)
	}
	if end := readTimesOut(t, c, within); end.Before(dl) {
		t.Fatalf("Read timed out %v before its deadline", dl.Sub(end))
	}
	if n := applied(&c.read); n != moves {
		t.Fatalf("%d moves; want %d", n, moves)
	}
}

// readTimesOut reads from c, which must block until a deadline and return
// no later than within, and returns when it did.
func readTimesOut(t *testing.T, c *Conn, within time.Duration) time.Time {
	t.Helper()
	start := time.Now()
	n, err := c.Read(make([]byte, 16))
	end := time.Now()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want a deadline error", n, err)
	}
	if took := end.Sub(start); took > within {
		t.Fatalf("Read timed out after %v; its deadline was at most %v away", took, within)
	}
	return end
}

// blockedRead starts a Read of c and returns once it is under way; the
// channel gets its result.
func blockedRead(t *testing.T, c *Conn) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		done <- err
	}()
	underway(t, &c.read)
	return done
}

// underway polls until a call on s is under way.
func underway(t *testing.T, s *side) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); s.calls.Load() == 0; {
		if time.Now().After(end) {
			t.Fatal("the call never started")
		}
		time.Sleep(time.Millisecond)
	}
}

// ended waits for a call's result on done, which must match want, within
// 5 s; what names what should have ended the call.
func ended(t *testing.T, done <-chan error, want error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, want) {
			t.Fatalf("the call ended with %v; want %v", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not end the blocked call", what)
	}
}

func TestReadDeadlineSetBeforeTheReadBoundsIt(t *testing.T) {
	c, _ := pair(t, time.Second)
	dl := time.Now().Add(100 * time.Millisecond)
	if err := c.SetReadDeadline(dl); err != nil {
		t.Fatal(err)
	}
	if n := applied(&c.read); n != 0 {
		t.Fatalf("the deadline reached the socket with no Read under way (%d moves)", n)
	}
	if end := readTimesOut(t, c, 2*time.Second); end.Before(dl) {
		t.Fatalf("Read timed out %v before its deadline", dl.Sub(end))
	}
}

func TestDeadlineSetDuringABlockedReadInterruptsIt(t *testing.T) {
	c, _ := pair(t, time.Second)
	done := blockedRead(t, c)
	// Earlier than set by less than slack would be allowed before a Read;
	// a Read under way gets the deadline exactly.
	if err := c.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	ended(t, done, os.ErrDeadlineExceeded, "a deadline in the past")
}

// A Read under way also gets a deadline moved later, or cleared, at once:
// the one it started with must not end it.
func TestDeadlineMovedLaterOrClearedDuringABlockedRead(t *testing.T) {
	for _, name := range []string{"later", "cleared"} {
		t.Run(name, func(t *testing.T) {
			c, client := pair(t, time.Second)
			first := time.Now().Add(100 * time.Millisecond)
			if err := c.SetReadDeadline(first); err != nil {
				t.Fatal(err)
			}
			done := blockedRead(t, c)
			next := time.Now().Add(time.Hour) // later by far more than slack
			if name == "cleared" {
				next = time.Time{}
			}
			if err := c.SetReadDeadline(next); err != nil {
				t.Fatal(err)
			}
			// The first deadline passing must not end the Read.
			select {
			case err := <-done:
				t.Fatalf("Read ended (%v) at the deadline it started with", err)
			case <-time.After(time.Until(first) + 400*time.Millisecond):
			}
			if _, err := client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Read: %v; want the byte", err)
			}
		})
	}
}

func TestCloseEndsABlockedRead(t *testing.T) {
	c, _ := pair(t, time.Second)
	done := blockedRead(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ended(t, done, net.ErrClosed, "Close")
}

// The moves fasthttp makes for each request on a busy keep-alive connection
// (idle timeout, read timeout, again the idle timeout on the next request)
// reach the socket once per slack, while every deadline still bounds the
// Read it precedes.
func TestRepeatedTimeoutsMoveTheSocketOncePerSlack(t *testing.T) {
	const slack = 2 * time.Second
	c, client := pair(t, slack)
	req := []byte("GET / HTTP/1.1\r\n\r\n")
	buf := make([]byte, len(req))
	const idle, read = 5 * time.Second, 3 * time.Second
	start := time.Now()
	for i := range 50 {
		if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(read)); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > slack {
		t.Skipf("50 requests took %v, more than the slack; the count below would not hold", took)
	}
	if n := applied(&c.read); n != 1 {
		t.Fatalf("the socket's read deadline moved %d times in 50 requests within the slack; want 1", n)
	}
	// A deadline earlier than the socket's (idle) one must reach the next
	// Read: without it, the Read would wait out the idle deadline (5 s).
	appliedExactly(t, c, time.Now().Add(50*time.Millisecond), 2*time.Second, 2)
}

func TestADeadlineMayFireAtMostSlackEarly(t *testing.T) {
	const slack = 200 * time.Millisecond
	c, client := pair(t, slack)
	first := time.Now().Add(300 * time.Millisecond)
	if err := c.SetReadDeadline(first); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// Later by less than slack: the socket keeps the earlier deadline.
	want := time.Now().Add(300*time.Millisecond + slack/2)
	if want.Sub(first) > slack {
		t.Skipf("the two deadlines are %v apart, more than the slack: nothing to check", want.Sub(first))
	}
	if err := c.SetReadDeadline(want); err != nil {
		t.Fatal(err)
	}
	end := readTimesOut(t, c, 3*time.Second)
	if early := want.Sub(end); early > slack {
		t.Fatalf("Read timed out %v before its deadline; slack is %v", early, slack)
	}
	if n := applied(&c.read); n != 1 {
		t.Fatalf("%d moves; want 1 (the later deadline was within slack)", n)
	}

	// Later by more than slack: the socket gets it exactly.
	appliedExactly(t, c, time.Now().Add(2*slack), 3*time.Second, 2)
}

// Slack never applies to wall-clock deadlines (no monotonic reading): a
// change of the system clock would move them.
func TestWallClockDeadlinesAreAppliedExactly(t *testing.T) {
	c, client := pair(t, time.Hour)
	base := time.Now().Add(time.Minute).Round(0)
	for i := range 3 {
		if err := c.SetReadDeadline(base.Add(time.Duration(i) * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if n := applied(&c.read); n != 3 {
		t.Fatalf("%d moves for 3 wall-clock deadlines within slack; want 3", n)
	}
}

func TestClearingADeadlineReachesTheSocket(t *testing.T) {
	c, client := pair(t, time.Second)
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	readTimesOut(t, c, 2*time.Second)
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// With the expired deadline still on the socket, Read would fail even
	// with data waiting.
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("Read with the deadline cleared: %v", err)
	}
}

// fill writes to c, whose client reads nothing, until a Write fails.
func fill(c *Conn) error {
	chunk := make([]byte, 64<<10)
	for {
		if _, err := c.Write(chunk); err != nil {
			return err
		}
	}
}

func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t, time.Second)
	dl := time.Now().Add(100 * time.Millisecond)
	if err := c.SetWriteDeadline(dl); err != nil {
		t.Fatal(err)
	}
	if n := applied(&c.write); n != 0 {
		t.Fatalf("the deadline reached the socket with no Write under way (%d moves)", n)
	}
	if err := fill(c); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write: %v; want a deadline error", err)
	}
	if time.Now().Before(dl) {
		t.Fatal("Write timed out before its deadline")
	}
	if n := applied(&c.write); n != 1 {
		t.Fatalf("%d moves; want 1", n)
	}
}

func TestDeadlineSetDuringABlockedWriteInterruptsIt(t *testing.T) {
	c, _ := pair(t, time.Second)
	done := make(chan error, 1)
	go func() { done <- fill(c) }()
	// The deadline reaches the Write under way: it ends it if blocked (the
	// client reads nothing, so the buffers fill within a few writes), or
	// else the next Write, which begins with the past deadline on the socket.
	underway(t, &c.write)
	if err := c.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	ended(t, done, os.ErrDeadlineExceeded, "a deadline in the past")
}

// Deadlines set from other goroutines while Reads and Writes run; run
// under -race.
func TestConcurrentUse(t *testing.T) {
	c, client := pair(t, time.Millisecond)
	go func() { _, _ = io.Copy(client, client) }() // echo
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = c.SetDeadline(time.Now().Add(time.Second))
			}
		})
	}
	buf := make([]byte, 3)
	for i := range 200 {
		if _, err := c.Write([]byte("abc")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestClosedListenerErrorPassesThrough(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(inner, time.Second)
	_ = ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v; want net.ErrClosed", err)
	}
}
