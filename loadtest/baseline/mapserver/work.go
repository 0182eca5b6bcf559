package mapserver

import (
	"fmt"
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
func busyWork(d time.Duration) (fiber.Handler, error) {
	rounds, err := calibrate(d)
	if err != nil {
		return nil, err
	}
	return func(c *fiber.Ctx) error {
		if spin(rounds, uint64(len(c.Path()))) == 0 { // keeps the work from being optimised away
			c.Set("X-Busy-Work", "0")
		}
		return c.Next()
	}, nil
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

// calibrate returns the rounds of spin that take about d of CPU: the
// fastest of five timings of a probe of about 10 ms, timed on the thread's
// own CPU clock (threadClock), so that a busy machine preempting the thread
// does not make the work look slower; the fastest because cache and
// frequency effects only ever lengthen one. A probe that reads under a
// millisecond means a clock too coarse to calibrate with: an error.
func calibrate(d time.Duration) (int, error) {
	if d <= 0 {
		return 0, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const probe = 1 << 23
	best := time.Duration(1<<63 - 1)
	x := uint64(1)
	for range 5 {
		start, err := threadClock()
		if err != nil {
			return 0, err
		}
		x = spin(probe, x)
		end, err := threadClock()
		if err != nil {
			return 0, err
		}
		best = min(best, end-start)
	}
	runtime.KeepAlive(x) // the timed work was done
	if best < time.Millisecond {
		return 0, fmt.Errorf("calibrating %v of work: %d rounds read as %v of CPU, too coarse a clock", d, probe, best)
	}
	return max(1, int(float64(probe)*float64(d)/float64(best))), nil
}
