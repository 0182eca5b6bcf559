package mapserver

import (
	"runtime"
	"time"

	"github.com/gofiber/fiber/v2"
)

// busyWork returns a middleware that keeps the CPU busy for about d per
// request before the route runs: a measuring stick for how throughput falls
// as a server's work per request grows (the budget phase of `make bench`).
//
// The work is a fixed number of rounds of integer arithmetic, calibrated once
// here: no clock is read inside it, nothing is allocated, no memory is
// touched, so what it adds is CPU time and nothing else. (Spinning until a
// clock says d has passed would burn less CPU whenever the thread is
// preempted mid-spin, which on a shared machine is exactly when it matters.)
func busyWork(d time.Duration) fiber.Handler {
	rounds := calibrate(d)
	return func(c *fiber.Ctx) error {
		if spin(rounds, uint64(len(c.Path()))) == 0 { // keeps the work from being optimised away
			c.Set("X-Busy-Work", "0")
		}
		return c.Next()
	}
}

// spin runs n rounds of a multiply-add chain from seed; each round depends on
// the previous one, so they cannot overlap.
func spin(n int, seed uint64) uint64 {
	x := seed | 1
	for range n {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

// calibrate returns the rounds of spin that take about d of CPU: the best of
// a few timings of a run long enough (about 10 ms) that the clock's
// resolution does not matter. Timed by the thread's own CPU clock where the
// platform has one (threadClock), so that a busy machine preempting the
// thread does not make the work look slower; the best of the timings
// because anything else only ever adds to one.
func calibrate(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const probe = 1 << 23
	best := time.Duration(1<<63 - 1)
	x := uint64(1)
	for range 5 {
		start := threadClock()
		x = spin(probe, x)
		best = min(best, threadClock()-start)
	}
	runtime.KeepAlive(x) // the timed work was done
	best = max(best, time.Nanosecond)
	return max(1, int(float64(probe)*float64(d)/float64(best)))
}
