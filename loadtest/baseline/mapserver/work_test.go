//go:build linux

package mapserver

import (
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// TestCalibratedWorkCostsItsDuration: the calibrated rounds cost about the
// asked-for CPU time, measured on the thread's CPU clock (not wall time), so
// a preempted test thread does not move it.
func TestCalibratedWorkCostsItsDuration(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const d = 50 * time.Millisecond
	n, err := calibrate(d)
	if err != nil {
		t.Fatal(err)
	}
	before, err := threadClock()
	if err != nil {
		t.Fatal(err)
	}
	x := spin(n, 1)
	after, err := threadClock()
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(x)
	took := after - before
	t.Logf("%d rounds calibrated for %v took %v of CPU", n, d, took)
	if took < d*7/10 || took > d*3/2 {
		t.Fatalf("%d rounds calibrated for %v took %v of CPU, want within [0.7, 1.5]x", n, d, took)
	}
	if n, err := calibrate(0); n != 0 || err != nil {
		t.Errorf("calibrate(0) = %d, %v; want no rounds", n, err)
	}
}

// TestNewWithWorkAnswersAsNew: the work is a middleware of its own, and it
// changes nothing the client sees.
func TestNewWithWorkAnswersAsNew(t *testing.T) {
	urls := map[string]string{"abc": "https://example.com/x"}
	plain := New(urls).HandlersCount()
	for _, work := range []time.Duration{0, 5 * time.Microsecond} {
		app, err := NewWithWork(urls, work)
		if err != nil {
			t.Fatal(err)
		}
		if extra := app.HandlersCount() - plain; (work > 0) != (extra == 1) {
			t.Errorf("work %v: %d handlers beyond the plain app's", work, extra)
		}
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
