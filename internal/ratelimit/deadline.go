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
// it is context.WithTimeout.
//
// A shared deadline is also lazy: it is fixed the first time the decider
// asks the context for it (Deadline, Done or Err), which a decider does
// before it waits on the network or on another request's fetch (the
// Leaser's queue). A token handed out from a lease asks only when it starts
// the next fetch ahead, once per batch, so most redirects cost no clock
// read for it. Safe for concurrent use.
type deadlines struct {
	timeout time.Duration
	cur     atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx      context.Context
	cancel   context.CancelFunc // never called: the timer releases ctx at the deadline
	deadline time.Time
}

// withDeadline returns a context with parent's values that ends timeout
// from its first use (at most deadlineGranularity sooner), or from now if
// parent can be cancelled, and the function releasing it.
func (d *deadlines) withDeadline(parent context.Context) (context.Context, context.CancelFunc) {
	if parent.Done() != nil {
		return context.WithTimeout(parent, d.timeout)
	}
	return &deadlineCtx{d: d, values: parent}, func() {}
}

// current returns a shared deadline ending timeout from now, at most
// deadlineGranularity sooner.
func (d *deadlines) current() *sharedDeadline {
	now := time.Now()
	s := d.cur.Load()
	if s == nil || s.deadline.Sub(now) <= d.timeout-deadlineGranularity {
		deadline := now.Add(d.timeout)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		s = &sharedDeadline{ctx: ctx, cancel: cancel, deadline: deadline}
		d.cur.Store(s) // a racing Store of an equally fresh deadline is as good
	}
	return s
}

// deadlineCtx is a shared deadline (Deadline, Done, Err), taken from d on
// first use, carrying the values of one request's context. The decider may
// hand it to other goroutines (go-redis, a lease fetch), so the first use
// is settled atomically.
type deadlineCtx struct {
	d      *deadlines
	values context.Context
	shared atomic.Pointer[sharedDeadline]
}

func (c *deadlineCtx) get() *sharedDeadline {
	if s := c.shared.Load(); s != nil {
		return s
	}
	s := c.d.current()
	if c.shared.CompareAndSwap(nil, s) {
		return s
	}
	return c.shared.Load() // another goroutine's first use won
}

// Deadline implements context.Context.
func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.get().deadline, true }

// Done implements context.Context.
func (c *deadlineCtx) Done() <-chan struct{} { return c.get().ctx.Done() }

// Err implements context.Context.
func (c *deadlineCtx) Err() error { return c.get().ctx.Err() }

// Value implements context.Context with the request's values.
func (c *deadlineCtx) Value(key any) any { return c.values.Value(key) }
