// Package health serves the orchestrator endpoints:
//
//   - /live: 200 while the process can serve; checks nothing external.
//   - /ready: 503 while starting, while draining, or when a critical check
//     (the store) fails; a non-critical check (Redis, which linkgate fails open
//     on) never takes an instance out of rotation.
//   - /health: application/health+json (draft-inadarei-api-health-check) with
//     status pass/warn/fail, version, uptime and one entry per check with its
//     observed latency; 200 for pass and warn, 503 for fail.
//
// Every answer carries Cache-Control: no-store. A Health is safe for
// concurrent use; MarkReady and Drain may be called from any goroutine.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Check is one dependency to probe.
type Check struct {
	// Name keys the check in /health ("store", "redis").
	Name string
	// ComponentType is the health+json componentType ("datastore", "component").
	ComponentType string
	// Critical checks fail readiness and make /health fail; others only warn.
	Critical bool
	// Probe returns nil when the dependency answers.
	Probe func(ctx context.Context) error
}

// Config configures a Health.
type Config struct {
	Checks  []Check
	Version string
	// Timeout bounds each probe. Default 1s.
	Timeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Health holds readiness state and runs the checks.
type Health struct {
	cfg      Config
	started  time.Time
	ready    atomic.Bool
	draining atomic.Bool
}

// New returns a Health that is not ready until MarkReady.
func New(cfg Config) (*Health, error) {
	for _, c := range cfg.Checks {
		if c.Name == "" || c.Probe == nil {
			return nil, fmt.Errorf("health: every check needs a Name and a Probe")
		}
		if c.ComponentType == "" {
			return nil, fmt.Errorf("health: check %s needs a ComponentType", c.Name)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Health{cfg: cfg, started: cfg.Now()}, nil
}

// MarkReady ends the starting phase.
func (h *Health) MarkReady() { h.ready.Store(true) }

// Drain turns readiness off for good: the process is shutting down.
func (h *Health) Drain() { h.draining.Store(true) }

// Draining reports whether Drain was called.
func (h *Health) Draining() bool { return h.draining.Load() }

type result struct {
	check    Check
	err      error
	duration time.Duration
	at       time.Time
}

// run probes every check concurrently, each within the timeout.
func (h *Health) run(ctx context.Context) []result {
	out := make([]result, len(h.cfg.Checks))
	var wg sync.WaitGroup
	for i, c := range h.cfg.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
			defer cancel()
			start := h.cfg.Now()
			err := c.Probe(ctx)
			out[i] = result{check: c, err: err, duration: h.cfg.Now().Sub(start), at: start}
		}()
	}
	wg.Wait()
	return out
}

// Live handles /live.
func (h *Health) Live(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	return c.SendString("ok")
}

// Ready handles /ready.
func (h *Health) Ready(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	switch {
	case h.draining.Load():
		return c.Status(fiber.StatusServiceUnavailable).SendString("draining")
	case !h.ready.Load():
		return c.Status(fiber.StatusServiceUnavailable).SendString("starting")
	}
	for _, r := range h.run(c.UserContext()) {
		if r.err != nil && r.check.Critical {
			return c.Status(fiber.StatusServiceUnavailable).SendString(r.check.Name + " unavailable")
		}
	}
	return c.SendString("ready")
}

type checkJSON struct {
	ComponentType string  `json:"componentType"`
	ObservedValue float64 `json:"observedValue"`
	ObservedUnit  string  `json:"observedUnit"`
	Status        string  `json:"status"`
	Time          string  `json:"time"`
	Output        string  `json:"output,omitempty"`
}

type healthJSON struct {
	Status      string                 `json:"status"`
	Version     string                 `json:"version"`
	ServiceID   string                 `json:"serviceId"`
	Description string                 `json:"description"`
	Notes       []string               `json:"notes,omitempty"`
	Checks      map[string][]checkJSON `json:"checks"`
}

// Health handles /health.
func (h *Health) Health(c *fiber.Ctx) error {
	now := h.cfg.Now()
	body := healthJSON{Status: "pass", Version: h.cfg.Version, ServiceID: "linkgate",
		Description: "linkgate URL shortener", Checks: map[string][]checkJSON{}}
	body.Checks["uptime"] = []checkJSON{{ComponentType: "system", ObservedValue: now.Sub(h.started).Seconds(),
		ObservedUnit: "s", Status: "pass", Time: now.UTC().Format(time.RFC3339)}}
	for _, r := range h.run(c.UserContext()) {
		cj := checkJSON{ComponentType: r.check.ComponentType, ObservedValue: float64(r.duration.Microseconds()) / 1000,
			ObservedUnit: "ms", Status: "pass", Time: r.at.UTC().Format(time.RFC3339)}
		if r.err != nil {
			cj.Output = r.err.Error()
			if r.check.Critical {
				cj.Status, body.Status = "fail", "fail"
			} else {
				cj.Status = "warn"
				if body.Status == "pass" {
					body.Status = "warn"
				}
			}
		}
		body.Checks[r.check.Name+":responseTime"] = []checkJSON{cj}
	}
	if h.draining.Load() {
		body.Notes = append(body.Notes, "draining: shutting down")
		if body.Status == "pass" {
			body.Status = "warn"
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, "application/health+json")
	if body.Status == "fail" {
		c.Status(fiber.StatusServiceUnavailable)
	}
	return c.Send(b)
}
