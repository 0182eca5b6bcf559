package ratelimit

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlineGranularity is how much earlier than asked a shared deadline may
// fall.
const deadlineGranularity = time.Millisecond

// deadlines gives each decision a context that ends timeout after it
// starts, cheaply: context.WithTimeout costs a timer, five allocations and
// about a microsecond of CPU per request, which is a large part of a
// batched decision. Requests that start within the same millisecond share
// one deadline context instead (so a deadline may fall up to
// deadlineGranularity early). Only parents that can never be cancelled
// (Done() == nil, as Fiber's default c.UserContext()) share; for others
// it is context.WithTimeout. Safe for concurrent use.
type deadlines struct {
	timeout time.Duration
	cur     atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx      context.Context
	cancel   context.CancelFunc // never called: the timer releases ctx at the deadline
	deadline time.Time
}

// withDeadline returns a context with parent's values that ends timeout from
// now (at most deadlineGranularity sooner), and the function releasing it.
func (d *deadlines) withDeadline(parent context.Context) (context.Context, context.CancelFunc) {
	if parent.Done() != nil {
		return context.WithTimeout(parent, d.timeout)
	}
	now := time.Now()
	s := d.cur.Load()
	if s == nil || s.deadline.Sub(now) <= d.timeout-deadlineGranularity {
		deadline := now.Add(d.timeout)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		s = &sharedDeadline{ctx: ctx, cancel: cancel, deadline: deadline}
		d.cur.Store(s) // a racing Store of an equally fresh deadline is as good
	}
	return &deadlineCtx{Context: s.ctx, values: parent}, func() {}
}

// deadlineCtx is a shared deadline (Deadline, Done, Err) carrying the
// values of one request's context.
type deadlineCtx struct {
	context.Context
	values context.Context
}

// Value implements context.Context with the request's values.
func (c *deadlineCtx) Value(key any) any { return c.values.Value(key) }
