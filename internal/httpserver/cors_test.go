package httpserver

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

func corsApp() *fiber.App {
	app := fiber.New()
	api := app.Group("/api/v1", newCORS([]string{"https://app.example"}))
	api.Post("/links", func(c *fiber.Ctx) error {
		c.Set("ETag", `"x"`)
		return c.Status(201).SendString("{}")
	})
	return app
}

func TestCORSPreflight(t *testing.T) {
	app := corsApp()
	req := httptest.NewRequest("OPTIONS", "/api/v1/links", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,if-match")
	resp, err := app.Test(req)
	if err != nil {
		t.Fatal(err)
	}
	h := resp.Header
	if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		h.Get("Access-Control-Max-Age") != "600" || !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") ||
		h.Get("Access-Control-Allow-Credentials") != "" || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, h)
	}
}

func TestCORSDisallowedOrigin(t *testing.T) {
	app := corsApp()
	req := httptest.NewRequest("OPTIONS", "/api/v1/links", nil)
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, _ := app.Test(req)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("disallowed origin got ACAO %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestCORSActualRequestExposesHeaders(t *testing.T) {
	app := corsApp()
	req := httptest.NewRequest("POST", "/api/v1/links", nil)
	req.Header.Set("Origin", "https://app.example")
	resp, _ := app.Test(req)
	exposed := resp.Header.Get("Access-Control-Expose-Headers")
	for _, want := range corsExposed {
		if !strings.Contains(strings.ToLower(exposed), strings.ToLower(want)) {
			t.Errorf("Expose-Headers %q lacks %s", exposed, want)
		}
	}
	if resp.StatusCode != 201 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("actual request: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestCORSSkipsRequestsWithoutOrigin(t *testing.T) {
	resp, _ := corsApp().Test(httptest.NewRequest("POST", "/api/v1/links", nil))
	if resp.StatusCode != 201 || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Vary") != "" {
		t.Fatalf("no-Origin request touched by CORS: %v", resp.Header)
	}
}
