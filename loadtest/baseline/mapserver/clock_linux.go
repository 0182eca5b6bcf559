package mapserver

import (
	"syscall"
	"time"
)

// threadClock is the CPU time the calling OS thread has used (the caller
// locks itself to its thread); wall time if that cannot be read.
func threadClock() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return time.Duration(time.Now().UnixNano())
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
