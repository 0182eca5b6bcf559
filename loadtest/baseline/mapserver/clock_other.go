//go:build !linux

package mapserver

import "time"

// threadClock is wall time here: no per-thread CPU clock is read on this
// platform, so calibrate's timings include any preemption.
func threadClock() time.Duration { return time.Duration(time.Now().UnixNano()) }
