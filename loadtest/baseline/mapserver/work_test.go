//go:build linux

package mapserver

import (
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
