package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// The probes here are functions whose answers the test switches; the real
// store and Redis probes are exercised end to end (test/e2e).
func setup(t *testing.T) (*fiber.App, *Health, *atomic.Bool, *atomic.Bool) {
	t.Helper()
	var storeDown, redisDown atomic.Bool
	probe := func(down *atomic.Bool) func(context.Context) error {
		return func(context.Context) error {
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		}
	}
	h, err := New(Config{Version: "test", Checks: []Check{
		{Name: "store", ComponentType: "datastore", Critical: true, Probe: probe(&storeDown)},
		{Name: "redis", ComponentType: "datastore", Probe: probe(&redisDown)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New()
	app.Get("/live", h.Live)
	app.Get("/ready", h.Ready)
	app.Get("/health", h.Health)
	return app, h, &storeDown, &redisDown
}

func get(t *testing.T, app *fiber.App, path string) (int, map[string]any) {
	t.Helper()
	resp, err := app.Test(httptest.NewRequest("GET", path, nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("%s: Cache-Control %q, want no-store", path, resp.Header.Get("Cache-Control"))
	}
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if path == "/health" {
		if resp.Header.Get("Content-Type") != "application/health+json" {
			t.Errorf("content type %q", resp.Header.Get("Content-Type"))
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("health body: %v %s", err, b)
		}
	}
	return resp.StatusCode, m
}

func TestReadinessLifecycle(t *testing.T) {
	app, h, storeDown, redisDown := setup(t)
	if s, _ := get(t, app, "/ready"); s != 503 {
		t.Fatalf("ready while starting = %d", s)
	}
	h.MarkReady()
	if s, _ := get(t, app, "/ready"); s != 200 {
		t.Fatalf("ready = %d", s)
	}
	redisDown.Store(true)
	if s, _ := get(t, app, "/ready"); s != 200 {
		t.Fatalf("redis down must not fail readiness: %d", s)
	}
	if s, m := get(t, app, "/health"); s != 200 || m["status"] != "warn" {
		t.Fatalf("health with redis down = %d %v, want 200 warn", s, m["status"])
	}
	storeDown.Store(true)
	if s, _ := get(t, app, "/ready"); s != 503 {
		t.Fatalf("store down must fail readiness: %d", s)
	}
	s, m := get(t, app, "/health")
	if s != 503 || m["status"] != "fail" {
		t.Fatalf("health with store down = %d %v", s, m["status"])
	}
	check := m["checks"].(map[string]any)["store:responseTime"].([]any)[0].(map[string]any)
	if check["status"] != "fail" || check["observedUnit"] != "ms" || check["output"] == nil {
		t.Fatalf("store check = %v", check)
	}
	if s, _ := get(t, app, "/live"); s != 200 {
		t.Fatalf("live must stay 200: %d", s)
	}
	storeDown.Store(false)
	redisDown.Store(false)
	if s, m := get(t, app, "/health"); s != 200 || m["status"] != "pass" || m["version"] != "test" {
		t.Fatalf("health = %d %v", s, m)
	}
	h.Drain()
	if s, _ := get(t, app, "/ready"); s != 503 {
		t.Fatalf("ready while draining = %d", s)
	}
	if s, _ := get(t, app, "/live"); s != 200 {
		t.Fatalf("live while draining = %d", s)
	}
}

func TestChecksNeedNames(t *testing.T) {
	if _, err := New(Config{Checks: []Check{{Probe: func(context.Context) error { return nil }}}}); err == nil {
		t.Fatal("a check without a name was accepted")
	}
}
