package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// edgeSlowloris dribbles a request header into port, one byte per interval,
// and returns how long after the first byte the server ended the exchange
// (closed the connection or answered, e.g. 408), and how. It gives up after
// limit.
func edgeSlowloris(t *testing.T, port int, interval, limit time.Duration) (time.Duration, string) {
	t.Helper()
	conn := edgeRawConn(t, port)
	header := "GET /edge-slowloris HTTP/1.1\r\nHost: short.test\r\nUser-Agent: slowloris\r\nX-Padding: " + strings.Repeat("a", 64) + "\r\n\r\n"
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; i < len(header); i++ {
			if _, err := conn.Write([]byte{header[i]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	_ = conn.SetReadDeadline(start.Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	took := time.Since(start)
	switch {
	case err == nil:
		resp.Body.Close()
		return took, "answered " + resp.Status + " " + resp.Header.Get("Content-Type")
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("connection still open %v after the first byte of a slow header", limit)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open %v after the first byte of a slow header", limit)
	}
	return took, "closed (" + err.Error() + ")"
}

// A client sending its request header one byte at a time is cut off: by
// nginx within client_header_timeout (10 s), and by linkgate directly within
// LINKGATE_READ_TIMEOUT. Both bound the whole header, not each read, so
// bytes arriving faster than the timeout do not keep the connection alive.
func TestEdgeSlowClients(t *testing.T) {
	t.Parallel()
	t.Run("nginx", func(t *testing.T) {
		t.Parallel()
		app := startServer(t, "sqlite://"+t.TempDir()+"/slow.db", edgeEnv...)
		ng := startEdgeNginx(t, fmt.Sprintf("127.0.0.1:%d", app.port))
		took, how := edgeSlowloris(t, ng.port, 2*time.Second, 14*time.Second)
		t.Logf("nginx: slow header (1 byte / 2 s) %s after %v", how, took.Round(time.Millisecond))
		if took < 9*time.Second {
			t.Fatalf("nginx ended a slow but live client after %v, before its 10s client_header_timeout: %s", took, how)
		}
		// The request never reached linkgate.
		for _, l := range edgeAppLog(t, app) {
			if l["msg"] == "request" && l["path"] == "/edge-slowloris" {
				t.Fatalf("slow request reached linkgate: %v", l)
			}
		}
	})
	t.Run("linkgate", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "sqlite://"+t.TempDir()+"/slow.db", "LINKGATE_READ_TIMEOUT=2s")
		took, how := edgeSlowloris(t, s.port, 500*time.Millisecond, 5*time.Second)
		t.Logf("linkgate: slow header (1 byte / 500 ms) %s after %v", how, took.Round(time.Millisecond))
		if took < 1500*time.Millisecond {
			t.Fatalf("linkgate ended a slow client after %v, before its 2s read timeout: %s", took, how)
		}
		if strings.HasPrefix(how, "answered") && !strings.Contains(how, "408 Request Timeout application/problem+json") {
			t.Fatalf("linkgate answered a timed-out request with %s, want a 408 problem", how)
		}
	})
}
