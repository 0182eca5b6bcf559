package httpserver

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

// TestRequestLogTimesTheHandler: the logged duration runs from when the
// server called the handler chain (fasthttp's request time) to the end of
// the handler, and the line carries the request ID sent back.
func TestRequestLogTimesTheHandler(t *testing.T) {
	var buf bytes.Buffer
	logger := levelLogger(slog.LevelInfo)
	app := fiber.New()
	app.Use(requestLog(newAccessLog(&buf, logger), fiber.DefaultErrorHandler))
	const work = 30 * time.Millisecond
	app.Get("/slow", func(c *fiber.Ctx) error {
		time.Sleep(work) // the work being timed, not synchronisation
		return c.SendStatus(fiber.StatusNoContent)
	})
	resp, err := app.Test(httptest.NewRequest("GET", "/slow", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var line struct {
		RequestID  string  `json:"request_id"`
		Status     int     `json:"status"`
		DurationMS float64 `json:"duration_ms"`
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
}
