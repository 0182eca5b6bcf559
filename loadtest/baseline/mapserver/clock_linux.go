package mapserver

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// threadClock reads the CPU time the calling OS thread has used (the caller
// locks itself to its thread), to the nanosecond: CLOCK_THREAD_CPUTIME_ID
// counts the running slice too, unlike getrusage(RUSAGE_THREAD), whose
// reading moves only at scheduler ticks (4 ms steps at HZ=250).
func threadClock() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("thread CPU clock: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
