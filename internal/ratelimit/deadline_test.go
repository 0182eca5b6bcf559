package ratelimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

func TestDeadlines(t *testing.T) {
	type key struct{}
	const timeout = 40 * time.Millisecond
	d := &deadlines{timeout: timeout}

	t.Run("uncancellable parent shares a deadline and keeps its values", func(t *testing.T) {
		parent := context.WithValue(context.Background(), key{}, "v")
		before := time.Now()
		ctx, cancel := d.withDeadline(parent)
		defer cancel()
		dl, ok := ctx.Deadline()
		if !ok || dl.After(time.Now().Add(timeout)) || dl.Before(before.Add(timeout-deadlineGranularity)) {
			t.Fatalf("deadline %v (ok=%v), want within %v of %v from now", dl, ok, deadlineGranularity, timeout)
		}
		if ctx.Value(key{}) != "v" {
			t.Fatal("request value lost")
		}
		if ctx.Err() != nil {
			t.Fatalf("fresh context already done: %v", ctx.Err())
		}
		testenv.WaitFor(t, time.Second, "the deadline", func() bool { return ctx.Err() != nil })
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) || time.Since(before) < timeout-deadlineGranularity {
			t.Fatalf("ended with %v after %v", ctx.Err(), time.Since(before))
		}
		// A later request gets a fresh deadline, not the expired one.
		ctx2, cancel2 := d.withDeadline(parent)
		defer cancel2()
		if ctx2.Err() != nil {
			t.Fatalf("context after an expired one: %v", ctx2.Err())
		}
	})

	t.Run("shared deadline is fixed at first use", func(t *testing.T) {
		// In a synctest bubble the clock only moves when every goroutine
		// waits, so the times below are exact.
		synctest.Test(t, func(t *testing.T) {
			d := &deadlines{timeout: timeout}
			ctx, cancel := d.withDeadline(context.Background())
			defer cancel()
			time.Sleep(time.Second) // the bubble's clock: a second passes at once
			asked := time.Now()
			var wg sync.WaitGroup
			deadlines := make([]time.Time, 8)
			for i := range deadlines {
				wg.Go(func() { deadlines[i], _ = ctx.Deadline() })
			}
			wg.Wait()
			for _, dl := range deadlines {
				if !dl.Equal(asked.Add(timeout)) {
					t.Fatalf("deadlines %v, want all %v: timeout from the first use, not from creation", deadlines, asked.Add(timeout))
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("context done %v before its deadline", ctx.Err())
			}
			<-ctx.Done()
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !time.Now().Equal(asked.Add(timeout)) {
				t.Fatalf("ended with %v at +%v, want DeadlineExceeded at +%v", ctx.Err(), time.Since(asked), timeout)
			}
		})
	})

	t.Run("cancellable parent", func(t *testing.T) {
		parent, cancelParent := context.WithCancel(context.Background())
		ctx, cancel := d.withDeadline(parent)
		defer cancel()
		cancelParent()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("parent cancelled, context err %v", ctx.Err())
		}
	})
}
