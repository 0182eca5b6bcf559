//go:build !linux

package mapserver

import "time"

// threadClock is wall time here: no per-thread CPU clock is read on this
// platform, so calibrate's timings include any preemption (the work then
// comes out smaller than asked on a busy machine).
func threadClock() (time.Duration, error) { return time.Duration(time.Now().UnixNano()), nil }
