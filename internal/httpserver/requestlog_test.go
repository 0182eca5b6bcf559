package httpserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/linkgate/linkgate/internal/clientip"
)

// TestRequestLogTimesTheHandler: the logged duration runs from when the
// server called the handler chain (fasthttp's request time) to the end of
// the handler, the line's time is the end of the handler (start plus the
// duration), and the line carries the request ID sent back and the client
// address.
func TestRequestLogTimesTheHandler(t *testing.T) {
	var buf bytes.Buffer
	logger := levelLogger(slog.LevelInfo)
	app := fiber.New()
	app.Use(requestLog(newAccessLog(&buf, logger), clientip.Source{}, fiber.DefaultErrorHandler))
	const work = 30 * time.Millisecond
	app.Get("/slow", func(c *fiber.Ctx) error {
		time.Sleep(work) // the work being timed, not synchronisation
		return c.SendStatus(fiber.StatusNoContent)
	})
	before := time.Now()
	resp, err := app.Test(httptest.NewRequest("GET", "/slow", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	resp.Body.Close()
	var line struct {
		Time       time.Time `json:"time"`
		RequestID  string    `json:"request_id"`
		Status     int       `json:"status"`
		DurationMS float64   `json:"duration_ms"`
		IP         string    `json:"ip"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("line %q: %v", buf.String(), err)
	}
	if line.Status != fiber.StatusNoContent || line.RequestID == "" || line.RequestID != resp.Header.Get(fiber.HeaderXRequestID) {
		t.Fatalf("line %+v, response X-Request-ID %q", line, resp.Header.Get(fiber.HeaderXRequestID))
	}
	if got := time.Duration(line.DurationMS * float64(time.Millisecond)); got < work || got > 10*time.Second {
		t.Fatalf("duration_ms %v for a handler that took at least %v", line.DurationMS, work)
	}
	if line.Time.Before(before.Add(work)) || line.Time.After(after) {
		t.Fatalf("time %v, want the handler's end, within [%v, %v]", line.Time, before.Add(work), after)
	}
	if line.IP != "0.0.0.0" { // app.Test's connection
		t.Fatalf("ip %q, want app.Test's 0.0.0.0", line.IP)
	}
}

// TestGeneratedRequestIDsAreUnique: IDs made for requests without a valid
// X-Request-ID differ across connections and across the requests of one
// keep-alive connection, and pass the check applied to client IDs.
func TestGeneratedRequestIDsAreUnique(t *testing.T) {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(requestLog(newAccessLog(nil, levelLogger(slog.LevelInfo)), clientip.Source{}, fiber.DefaultErrorHandler))
	app.Get("/", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNoContent) })
	addr := serve(t, app)

	seen := map[string]bool{}
	for range 4 {
		conn, br := dial(t, addr)
		for range 5 {
			fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: t\r\nX-Request-ID: bad id\r\n\r\n")
			id := readResponse(t, br).Header.Get(fiber.HeaderXRequestID)
			if !validRequestID(id) || seen[id] {
				t.Fatalf("generated ID %q: valid %v, seen before %v (%v)", id, validRequestID(id), seen[id], seen)
			}
			seen[id] = true
		}
		conn.Close()
	}
}

// TestClientRequestIDEchoedAndLogged: a valid client X-Request-ID, up to the
// longest allowed (128 bytes, past the 32 logged without an allocation), is
// sent back and logged as it came; a longer one is replaced by a generated
// ID, sent back and logged alike.
func TestClientRequestIDEchoedAndLogged(t *testing.T) {
	var buf bytes.Buffer
	app := fiber.New()
	app.Use(requestLog(newAccessLog(&buf, levelLogger(slog.LevelInfo)), clientip.Source{}, fiber.DefaultErrorHandler))
	app.Get("/", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNoContent) })
	long := strings.Repeat("a1-_.:", 22)[:128]
	for _, sent := range []string{"x", "client-chosen.id_1:2", long[:33], long, long + "b"} {
		buf.Reset()
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set(fiber.HeaderXRequestID, sent)
		resp, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var line struct {
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", buf.String(), err)
		}
		echoed := resp.Header.Get(fiber.HeaderXRequestID)
		want := sent
		if len(sent) > 128 {
			want = echoed // generated
			if echoed == sent || !validRequestID(echoed) {
				t.Fatalf("%d-byte ID: echoed %q, want a generated one", len(sent), echoed)
			}
		}
		if echoed != want || line.RequestID != want {
			t.Fatalf("sent %q: echoed %q, logged %q", sent, echoed, line.RequestID)
		}
	}
}
