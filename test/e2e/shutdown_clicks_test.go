package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestDrainTimeoutKeepsLateClicks: a redirect still waiting on the database
// when LINKGATE_DRAIN_TIMEOUT passes is let finish (within the store
// timeout): it gets its 302, its click is in the final flush, and the
// process exits 0 as soon as it is done rather than after the store timeout.
func TestDrainTimeoutKeepsLateClicks(t *testing.T) {
	dbURL := testenv.PostgresURL(t)
	s := startServer(t, dbURL, "LINKGATE_DRAIN_TIMEOUT=200ms", "LINKGATE_STORE_TIMEOUT=20s",
		"LINKGATE_CLICK_FLUSH_INTERVAL=1h", "LINKGATE_LOG_LEVEL=info")
	s.create(t, `{"url":"https://example.com/late","code":"late-click"}`)

	unlock := testenv.LockTable(t, dbURL, "links")
	type result struct {
		r   response
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client.Get(s.URL + "/late-click") // not cached yet: resolved from the locked table
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		got <- result{r: response{Status: resp.StatusCode, Header: resp.Header}}
	}()
	testenv.WaitFor(t, 10*time.Second, "the redirect waiting for the links table", func() bool {
		return testenv.LockWaiters(t, dbURL, "links") > 0
	})

	sent := edgeSignal(t, s)
	testenv.WaitFor(t, 10*time.Second, "the drain timeout", func() bool {
		return strings.Contains(s.logs(), "drain incomplete")
	})
	unlock()
	unlocked := time.Now()
	select {
	case res := <-got:
		if res.err != nil || res.r.Status != http.StatusFound || res.r.Header.Get("Location") != "https://example.com/late" {
			t.Fatalf("redirect running past the drain timeout: %+v, %v; want 302 to the link\n%s", res.r, res.err, s.logs())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no answer 10s after the lock went\n%s", s.logs())
	}
	edgeWaitExit(t, s, sent, 30*time.Second)
	if took := time.Since(unlocked); took > 5*time.Second {
		t.Errorf("exit %v after the last request ended; want it without waiting out the 20s store timeout", took)
	}
	if strings.Contains(s.logs(), "still running") {
		t.Errorf("stopped with requests running\n%s", s.logs())
	}

	s.restart()
	r := do(t, "GET", s.URL+"/api/v1/links/late-click", nil, adminAuth)
	if r.Status != http.StatusOK || r.json(t)["clicks"] != float64(1) {
		t.Fatalf("after restart: %d %s; want clicks 1 (the late redirect's click flushed at exit)", r.Status, r.Body)
	}
}
