//go:build linux

package mapserver

import (
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// TestCalibratedWorkCostsItsDuration: the calibrated rounds cost about the
// asked-for CPU time, measured as the thread's CPU time (not wall time), so
// a preempted test thread does not move it.
func TestCalibratedWorkCostsItsDuration(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const d = 50 * time.Millisecond
	n := calibrate(d)
	before := threadClock()
	x := spin(n, 1)
	took := threadClock() - before
	runtime.KeepAlive(x)
	t.Logf("%d rounds calibrated for %v took %v of CPU", n, d, took)
	if took < d/2 || took > 2*d {
		t.Fatalf("%d rounds calibrated for %v took %v of CPU", n, d, took)
	}
	if calibrate(0) != 0 {
		t.Error("no work calibrated to some rounds")
	}
}

// TestNewWithWorkAnswersAsNew: the added work changes nothing the client
// sees.
func TestNewWithWorkAnswersAsNew(t *testing.T) {
	urls := map[string]string{"abc": "https://example.com/x"}
	for _, work := range []time.Duration{0, 5 * time.Microsecond} {
		app := NewWithWork(urls, work)
		for path, want := range map[string]int{"/abc": 302, "/nope": 404} {
			resp, err := app.Test(httptest.NewRequest("GET", path, nil))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != want || (want == 302 && resp.Header.Get("Location") != urls["abc"]) || resp.Header.Get("X-Busy-Work") != "" {
				t.Errorf("work %v, GET %s: %d %v", work, path, resp.StatusCode, resp.Header)
			}
		}
	}
}
