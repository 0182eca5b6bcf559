package deadline

import (
	"errors"
	"io"
	"net"
	"os"
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

// readTimesOut reads from c, which must block until its deadline, and
// returns how long that took.
func readTimesOut(t *testing.T, c *Conn) time.Duration {
	t.Helper()
	start := time.Now()
	n, err := c.Read(make([]byte, 16))
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want a deadline error", n, err)
	}
	return took
}

func TestReadDeadlineSetBeforeTheReadBoundsIt(t *testing.T) {
	c, _ := pair(t, time.Second)
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n := applied(&c.read); n != 0 {
		t.Fatalf("the deadline reached the socket with no Read under way (%d moves)", n)
	}
	if took := readTimesOut(t, c); took < 90*time.Millisecond {
		t.Fatalf("Read timed out after %v, before its deadline", took)
	}
}

func TestDeadlineSetDuringABlockedReadInterruptsIt(t *testing.T) {
	c, _ := pair(t, time.Second)
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_, err := c.Read(make([]byte, 16))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read: %v; want a deadline error", err)
		}
		done <- time.Since(start)
	}()
	for end := time.Now().Add(5 * time.Second); c.read.calls.Load() == 0; {
		if time.Now().After(end) {
			t.Fatal("Read never started")
		}
		time.Sleep(time.Millisecond)
	}
	// Earlier than set by less than slack would be allowed before a Read;
	// a Read under way gets the deadline exactly.
	if err := c.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline in the past did not end the blocked Read")
	}
}

// The moves fasthttp makes for each request on a busy keep-alive connection
// (idle timeout, read timeout, again the idle timeout on the next request)
// reach the socket once per slack, while every deadline still bounds the
// Read it precedes.
func TestRepeatedTimeoutsMoveTheSocketOncePerSlack(t *testing.T) {
	c, client := pair(t, time.Second)
	req := []byte("GET / HTTP/1.1\r\n\r\n")
	buf := make([]byte, len(req))
	const idle, read = 75 * time.Second, 10 * time.Second
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
	if n := applied(&c.read); n != 1 {
		t.Fatalf("the socket's read deadline moved %d times in 50 requests within a second; want 1", n)
	}
	// The read timeout set after the last request is earlier than the
	// socket's idle deadline: the next Read must get it.
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if took := readTimesOut(t, c); took < 40*time.Millisecond {
		t.Fatalf("Read timed out after %v, before its deadline", took)
	}
	if n := applied(&c.read); n != 2 {
		t.Fatalf("%d moves; want 2", n)
	}
}

func TestADeadlineMayFireAtMostSlackEarly(t *testing.T) {
	const slack = 200 * time.Millisecond
	c, client := pair(t, slack)
	if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// Later by less than slack: the socket keeps the earlier deadline.
	want := time.Now().Add(400 * time.Millisecond)
	if err := c.SetReadDeadline(want); err != nil {
		t.Fatal(err)
	}
	readTimesOut(t, c)
	if early := time.Until(want); early > slack {
		t.Fatalf("Read timed out %v before its deadline; slack is %v", early, slack)
	}
	if n := applied(&c.read); n != 1 {
		t.Fatalf("%d moves; want 1 (the later deadline was within slack)", n)
	}

	// Later by more than slack: the socket gets it.
	if err := c.SetReadDeadline(time.Now().Add(2 * slack)); err != nil {
		t.Fatal(err)
	}
	if took := readTimesOut(t, c); took < 2*slack-slack/10 {
		t.Fatalf("Read timed out after %v; deadline was %v", took, 2*slack)
	}
	if n := applied(&c.read); n != 2 {
		t.Fatalf("%d moves; want 2", n)
	}
}

func TestClearingADeadlineReachesTheSocket(t *testing.T) {
	c, client := pair(t, time.Second)
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	readTimesOut(t, c)
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

func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t, time.Second) // the client never reads: writes block once the buffers fill
	if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n := applied(&c.write); n != 0 {
		t.Fatalf("the deadline reached the socket with no Write under way (%d moves)", n)
	}
	start := time.Now()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := c.Write(chunk); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Write: %v; want a deadline error", err)
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("writes to a client that reads nothing never timed out")
		}
	}
	if took := time.Since(start); took < 90*time.Millisecond {
		t.Fatalf("Write timed out after %v, before its deadline", took)
	}
	if n := applied(&c.write); n != 1 {
		t.Fatalf("%d moves; want 1", n)
	}
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
