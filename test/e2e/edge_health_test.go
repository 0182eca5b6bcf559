package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// edgeHealth is the part of /health the tests read.
type edgeHealth struct {
	Status int
	Body   struct {
		Status string `json:"status"`
		Checks map[string][]struct {
			Status string `json:"status"`
			Output string `json:"output"`
		} `json:"checks"`
	}
	Raw string
}

// check returns the status of the first check whose key starts with name
// ("store" matches "store:responseTime"), or "".
func (h edgeHealth) check(name string) string {
	for k, v := range h.Body.Checks {
		if (k == name || strings.HasPrefix(k, name+":")) && len(v) > 0 {
			return v[0].Status
		}
	}
	return ""
}

func edgeGetHealth(t *testing.T, s *server) edgeHealth {
	t.Helper()
	r := do(t, "GET", s.URL+"/health", nil)
	h := edgeHealth{Status: r.Status, Raw: string(r.Body)}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/health+json") {
		t.Fatalf("/health Content-Type %q", ct)
	}
	if err := json.Unmarshal(r.Body, &h.Body); err != nil {
		t.Fatalf("/health body: %v: %s", err, r.Body)
	}
	return h
}

// Probes with real dependencies going away: a dead store takes the instance
// out of rotation (/ready 503, /health fail) but it stays live; a dead Redis
// only warns (linkgate fails open on Redis).
func TestEdgeHealthDependencies(t *testing.T) {
	t.Parallel()
	t.Run("postgres down", func(t *testing.T) {
		t.Parallel()
		pg := testenv.StartPostgres(t)
		s := startServer(t, pg.URL())
		if r := do(t, "GET", s.URL+"/ready", nil); r.Status != 200 {
			t.Fatalf("/ready with the store up: %d %s", r.Status, r.Body)
		}
		if h := edgeGetHealth(t, s); h.Status != 200 || h.Body.Status != "pass" || h.check("store") != "pass" {
			t.Fatalf("/health with the store up: %d %s", h.Status, h.Raw)
		}
		pg.Stop()
		testenv.WaitFor(t, 10*time.Second, "/ready 503 with the store down", func() bool {
			return do(t, "GET", s.URL+"/ready", nil).Status == 503
		})
		h := edgeGetHealth(t, s)
		if h.Status != 503 || h.Body.Status != "fail" || h.check("store") != "fail" {
			t.Fatalf("/health with the store down: %d %s", h.Status, h.Raw)
		}
		if r := do(t, "GET", s.URL+"/live", nil); r.Status != 200 {
			t.Fatalf("/live with the store down: %d", r.Status)
		}
		// And back.
		pg.Start()
		testenv.WaitFor(t, 15*time.Second, "/ready 200 after the store is back", func() bool {
			return do(t, "GET", s.URL+"/ready", nil).Status == 200
		})
		if h := edgeGetHealth(t, s); h.Body.Status != "pass" {
			t.Fatalf("/health after the store is back: %d %s", h.Status, h.Raw)
		}
	})
	t.Run("redis down", func(t *testing.T) {
		t.Parallel()
		rd := testenv.StartRedis(t)
		s := startServer(t, "sqlite://"+t.TempDir()+"/redis.db", "LINKGATE_REDIS_URL="+rd.URL())
		h := edgeGetHealth(t, s)
		if h.Status != 200 || h.Body.Status != "pass" {
			t.Fatalf("/health with Redis up: %d %s", h.Status, h.Raw)
		}
		if h.check("redis") != "pass" {
			t.Fatalf("/health has no passing redis check with LINKGATE_REDIS_URL set (is Redis wired into main?): %s", h.Raw)
		}
		rd.Kill()
		testenv.WaitFor(t, 10*time.Second, "/health warn with Redis down", func() bool {
			h = edgeGetHealth(t, s)
			return h.Body.Status != "pass"
		})
		if h.Status != 200 || h.Body.Status != "warn" || h.check("redis") != "warn" || h.check("store") != "pass" {
			t.Fatalf("/health with Redis down: %d %s", h.Status, h.Raw)
		}
		if r := do(t, "GET", s.URL+"/ready", nil); r.Status != 200 {
			t.Fatalf("/ready with Redis down: %d %s (Redis must not take an instance out)", r.Status, r.Body)
		}
		if r := do(t, "GET", s.URL+"/live", nil); r.Status != 200 {
			t.Fatalf("/live with Redis down: %d", r.Status)
		}
	})
}
