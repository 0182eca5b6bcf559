package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// edgeRawConn opens a plain TCP connection to a test server.
func edgeRawConn(t *testing.T, port int) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// edgeReadResponse reads one HTTP response from conn within timeout.
func edgeReadResponse(t *testing.T, conn net.Conn, br *bufio.Reader, timeout time.Duration) (*http.Response, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, string(b)
}

// SIGTERM: /ready turns 503 at once while /live stays 200; a request still
// being sent when the listener closes completes; the process exits 0.
func TestEdgeShutdownInFlight(t *testing.T) {
	db := "sqlite://" + t.TempDir() + "/inflight.db"
	s := startServer(t, db, "LINKGATE_SHUTDOWN_DELAY=1500ms", "LINKGATE_DRAIN_TIMEOUT=5s", "LINKGATE_LOG_LEVEL=info")

	// A create whose body is sent in two parts, the second only after the
	// listener has closed.
	body := `{"url":"https://example.com/inflight"}`
	conn := edgeRawConn(t, s.port)
	fmt.Fprintf(conn, "POST /api/v1/links HTTP/1.1\r\nHost: short.test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body[:10])

	// Poll /ready on fresh connections right after the signal.
	probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) int {
		resp, err := probe.Get(s.URL + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/ready") != 200 {
		t.Fatal("not ready before SIGTERM")
	}
	keepAlive := &http.Client{Timeout: time.Second, Transport: &http.Transport{}}
	t.Cleanup(keepAlive.CloseIdleConnections)
	closes := func() bool {
		t.Helper()
		resp, err := keepAlive.Get(s.URL + "/live")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Close
	}
	if closes() {
		t.Fatal("Connection: close before SIGTERM")
	}
	sent := edgeSignal(t, s)
	var readyOff time.Duration
	testenv.WaitFor(t, time.Second, "/ready 503 after SIGTERM", func() bool {
		if get("/ready") == 503 {
			readyOff = time.Since(sent)
			return true
		}
		return false
	})
	live := get("/live")
	t.Logf("/ready answered 503 %v after SIGTERM; /live then answered %d", readyOff.Round(time.Microsecond), live)
	// At once: well before the 1.5 s delay ends (500 ms leaves room for a
	// fresh connection's probe on a loaded machine under -race).
	if readyOff > 500*time.Millisecond {
		t.Errorf("/ready turned 503 only %v after SIGTERM, want within 500ms", readyOff)
	}
	if live != 200 {
		t.Errorf("/live answered %d while draining, want 200", live)
	}
	// During the delay responses ask the client to close the connection.
	if !closes() {
		t.Error("response during the shutdown delay lacks Connection: close")
	}

	// Wait for the listener to close (the delay has passed), then finish the
	// in-flight request.
	testenv.WaitFor(t, 5*time.Second, "listener closed", func() bool { return !edgeDialable(fmt.Sprintf("127.0.0.1:%d", s.port)) })
	closedAt := time.Since(sent)
	if _, err := io.WriteString(conn, body[10:]); err != nil {
		t.Fatalf("finish in-flight body after the listener closed (%v after SIGTERM): %v", closedAt, err)
	}
	r, rb := edgeReadResponse(t, conn, bufio.NewReader(conn), 5*time.Second)
	if r.StatusCode != 201 || !strings.Contains(rb, "https://example.com/inflight") {
		t.Fatalf("in-flight create: %d %s", r.StatusCode, rb)
	}
	if !r.Close {
		t.Error("in-flight response during drain lacks Connection: close")
	}
	exit := edgeWaitExit(t, s, sent, 8*time.Second)
	t.Logf("listener closed %v after SIGTERM; in-flight request completed; exit 0 after %v", closedAt.Round(time.Millisecond), exit.Round(time.Millisecond))
	if closedAt < 1400*time.Millisecond {
		t.Errorf("listener closed %v after SIGTERM, before the 1.5s shutdown delay", closedAt)
	}

	s.restart()
	snap := s.snapshot(t)
	found := false
	for _, l := range snap {
		found = found || strings.Contains(l, "https://example.com/inflight")
	}
	if !found {
		t.Fatal("the link created during drain is not stored")
	}
}

// An idle keep-alive connection does not hold up the exit: the process exits
// soon after the shutdown delay, well before the drain timeout.
func TestEdgeShutdownIdleKeepAlive(t *testing.T) {
	const delay, drain = 200 * time.Millisecond, 5 * time.Second
	s := startServer(t, "sqlite://"+t.TempDir()+"/idle.db",
		"LINKGATE_SHUTDOWN_DELAY="+delay.String(), "LINKGATE_DRAIN_TIMEOUT="+drain.String())
	conn := edgeRawConn(t, s.port)
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /live HTTP/1.1\r\nHost: short.test\r\n\r\n")
	if r, _ := edgeReadResponse(t, conn, br, 2*time.Second); r.StatusCode != 200 || r.Close {
		t.Fatalf("keep-alive request: %d, close %v", r.StatusCode, r.Close)
	}
	// The connection is now idle, kept alive.
	sent := edgeSignal(t, s)
	exit := edgeWaitExit(t, s, sent, delay+drain+2*time.Second)
	t.Logf("exit with an idle keep-alive connection: %v after SIGTERM (delay %v, drain timeout %v)", exit.Round(time.Millisecond), delay, drain)
	if exit > delay+2*time.Second { // room for a loaded machine, still far below the drain timeout
		t.Errorf("exit took %v with an idle keep-alive client; want about the %v delay, far below the %v drain timeout", exit, delay, drain)
	}
	// The server closed the idle connection.
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := br.ReadByte(); err == nil {
		t.Fatalf("idle connection still open after exit (read %q)", n)
	}
}

// A client that connected but has not sent a byte yet: fasthttp counts such
// a connection as active, not idle, so it may hold the drain until the read
// timeout ends it. It must still never delay exit past the drain timeout.
func TestEdgeShutdownSilentConnection(t *testing.T) {
	const delay, drain, read = 200 * time.Millisecond, 3 * time.Second, 10 * time.Second
	s := startServer(t, "sqlite://"+t.TempDir()+"/silent.db",
		"LINKGATE_SHUTDOWN_DELAY="+delay.String(), "LINKGATE_DRAIN_TIMEOUT="+drain.String(), "LINKGATE_READ_TIMEOUT="+read.String())
	edgeRawConn(t, s.port)
	testenv.WaitFor(t, 2*time.Second, "server to accept", func() bool { return edgeGet200(s.URL + "/live") })
	sent := edgeSignal(t, s)
	exit := edgeWaitExit(t, s, sent, delay+drain+2*time.Second)
	t.Logf("exit with a connected, silent client: %v after SIGTERM (delay %v, drain timeout %v, read timeout %v)", exit.Round(time.Millisecond), delay, drain, read)
	if exit > delay+drain+2*time.Second { // room for a loaded machine, far below the read timeout
		t.Errorf("exit took %v, past delay + drain timeout", exit)
	}
}

func edgeGet200(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// An instance stopped behind the shipped nginx has no connection left open
// when its shutdown delay ends. nginx pooled keep-alive connections to it;
// they were idle through the delay (every response in it says Connection:
// close, so a used one is not pooled again), and nginx closed them itself
// after its upstream keepalive_timeout, which is below the delay. Were one
// still open, the drain would close it while nginx might be sending a
// request on it: a reset that nginx cannot retry for a POST (with nginx's
// default keepalive_timeout, 60 s, this test fails).
func TestEdgeShutdownAfterNginxPoolClosed(t *testing.T) {
	c := startEdgeCluster(t, 2)
	a := c.apps[0]
	cl := edgeClient("127.0.0.7")
	// The harness's own probe connections are not nginx's: close them, so
	// every connection A still has is one nginx keeps.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	testenv.WaitFor(t, 10*time.Second, "nginx to keep a connection to the first instance", func() bool {
		r := edgeMustDo(t, cl, "GET", c.nginx.URL+"/live", nil)
		if r.Status != 200 {
			t.Fatalf("GET /live through nginx: %d %s", r.Status, r.Body)
		}
		return establishedAt(t, a.port) > 0
	})
	pooled := establishedAt(t, a.port)

	sent := edgeSignal(t, a)
	exit := edgeWaitExit(t, a, sent, 15*time.Second)
	openAt := func(msg string) float64 {
		if n, ok := edgeAppLogLine(t, a, msg)["open_connections"].(float64); ok {
			return n
		}
		return -1
	}
	atStart, atEnd := openAt("shutting down"), openAt("shutdown delay over; draining")
	t.Logf("%d connections from nginx before SIGTERM; open connections at SIGTERM %v, when the delay ended %v; exit after %v",
		pooled, atStart, atEnd, exit.Round(time.Millisecond))
	if atStart < 1 {
		t.Errorf("open connections at SIGTERM %v, want nginx's pooled ones (%d seen) counted", atStart, pooled)
	}
	if atEnd != 0 {
		t.Errorf("%v connections still open when the shutdown delay ended, want 0: nginx's upstream keepalive_timeout must be below LINKGATE_SHUTDOWN_DELAY", atEnd)
	}
	// The other instance serves on.
	if r := edgeMustDo(t, cl, "GET", c.nginx.URL+"/live", nil); r.Status != 200 {
		t.Fatalf("GET /live through nginx after the stop: %d %s", r.Status, r.Body)
	}
}

// establishedAt counts the established TCP connections whose local end is
// 127.0.0.1:port, the server side of connections to a test instance (from
// /proc/net/tcp, Linux).
func establishedAt(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 01 is ESTABLISHED.
		if len(f) > 3 && f[1] == local && f[3] == "01" {
			n++
		}
	}
	return n
}

// Clients opening new connections as fast as they can while the instance
// stops, ten times or more: no request may be reset after it was sent.
// Closing the listener plainly resets the connections the kernel completed
// that linkgate had not accepted yet (this test then saw 2 resets in its 10
// shutdowns; an ad-hoc run saw 21 in 40); waiting for the accept queue alone
// left a microsecond's window, which CI hit once (a handshake completing
// just before the close). internal/quiesce fences the socket first (no new
// handshake starts) and waits for the queue and the handshakes under way.
// The unit tests in internal/quiesce are the deterministic guard; this one
// shows the binary's shutdown does use it, fenced, and that something was
// queued at some shutdown (else it proves nothing). A refused connection is
// fine: a proxy retries it elsewhere.
func TestEdgeShutdownResetsNoQueuedConnection(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/queue.db", "LINKGATE_SHUTDOWN_DELAY=100ms", "LINKGATE_LOG_LEVEL=info")
	addr := fmt.Sprintf("127.0.0.1:%d", s.port)
	var ok, refused atomic.Int64
	withQueue := 0 // shutdowns that found connections queued
	var mu sync.Mutex
	var resets []string
	// At least 10 shutdowns, and more (up to 30) until one has found
	// something queued: 2 to 7 of 10 do here, so ten alone would find
	// nothing in a few percent of runs.
	shutdowns := 0
	for ; shutdowns < 30 && (shutdowns < 10 || withQueue == 0); shutdowns++ {
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					c, err := net.DialTimeout("tcp", addr, 2*time.Second)
					if err != nil {
						refused.Add(1)
						time.Sleep(time.Millisecond) // pacing while the port is closed
						continue
					}
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					_, werr := io.WriteString(c, "GET /live HTTP/1.1\r\nHost: short.test\r\nConnection: close\r\n\r\n")
					line, rerr := bufio.NewReader(c).ReadString('\n')
					c.Close()
					if werr == nil && rerr == nil && strings.HasPrefix(line, "HTTP/1.1 200") {
						ok.Add(1)
						continue
					}
					mu.Lock()
					resets = append(resets, fmt.Sprintf("%s write %v, read %q %v", time.Now().Format("15:04:05.000000"), werr, line, rerr))
					mu.Unlock()
				}
			}()
		}
		before := ok.Load()
		testenv.WaitFor(t, 5*time.Second, "requests under way", func() bool { return ok.Load() >= before+200 })
		sent := edgeSignal(t, s)
		edgeWaitExit(t, s, sent, 10*time.Second)
		stop.Store(true)
		wg.Wait()
		if l := edgeAppLogLine(t, s, "listener closed"); l != nil {
			if q, _ := l["queued"].(float64); q > 0 {
				withQueue++
			}
			if l["fenced"] != true {
				t.Errorf("shutdown %d: listener closed unfenced (%v): new handshakes were not stopped", shutdowns+1, l["fenced"])
			}
			t.Logf("shutdown %d at %s: listener closed with %v queued, %v left, after %v, fenced %v", shutdowns+1, sent.Format("15:04:05.000"), l["queued"], l["left"], l["waited"], l["fenced"])
		}
		s.restart()
	}
	t.Logf("%d requests answered, %d connections refused, %d failed after sending; %d of %d shutdowns found connections queued",
		ok.Load(), refused.Load(), len(resets), withQueue, shutdowns)
	if withQueue == 0 {
		t.Error("no shutdown found a connection in the accept queue: the load did not reach the race")
	}
	if len(resets) > 0 {
		t.Errorf("%d requests failed after they were sent:\n%s", len(resets), strings.Join(resets, "\n"))
	}
}
