package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestServerErrorLoggedWithRequestID: a 5xx is logged with the request ID
// the response carries (set before the handlers by the request log), and
// answered as a problem.
func TestServerErrorLoggedWithRequestID(t *testing.T) {
	var buf bytes.Buffer
	h := &Handlers{cfg: Config{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}}
	app := fiber.New(fiber.Config{ErrorHandler: h.ErrorHandler})
	app.Use(func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderXRequestID, "req-42")
		return c.Next()
	})
	app.Get("/boom", func(*fiber.Ctx) error { return errors.New("disk on fire") })
	resp, err := app.Test(httptest.NewRequest("GET", "/boom", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != fiber.StatusInternalServerError || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%d %q, want 500 problem+json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if line["msg"] != "request failed" || line["request_id"] != "req-42" || line["err"] != "disk on fire" {
		t.Fatalf("log line %s, want request failed with request_id req-42", buf.String())
	}
}
