package ratelimit

import "time"

// elapsed is a clock read as nanoseconds since it was made. Only durations
// are taken from it, so a step of the wall clock never refills or drains a
// bucket.
//
// The default reads only the monotonic clock (time.Since on a time.Now
// reading): one vDSO call where time.Now makes two. The limiters read it on
// every decision; on the 2-core VMs linkgate is measured on, time.Now costs
// about 48 ns and time.Since about 26 ns.
type elapsed struct {
	now  func() time.Time // nil: the process's monotonic clock
	base time.Time
}

// newElapsed returns a clock reading now (nil: the monotonic clock), zero at
// the call.
func newElapsed(now func() time.Time) elapsed {
	if now == nil {
		return elapsed{base: time.Now()}
	}
	return elapsed{now: now, base: now()}
}

// nanos returns the nanoseconds since the clock was made (negative when a
// test clock is set back before that).
func (e elapsed) nanos() int64 {
	if e.now == nil {
		return int64(time.Since(e.base))
	}
	return int64(e.now().Sub(e.base))
}
