package httpserver

import "sync/atomic"

// inflightStripes is the number of counters Inflight spreads requests over.
const inflightStripes = 16

// Inflight counts the requests inside the app's handlers, so that shutdown
// can wait for those still running after fasthttp's drain has timed out:
// they count clicks and use the store, which are flushed and closed next.
// (fasthttp counts connections, including silent and idle ones that run no
// handler, and once its drain has ended reports one fewer than are open.)
// Requests are counted on one of 16 cache-line-sized stripes chosen by
// connection, so that the cores do not pass one counter's line back and
// forth on every request. The zero value is ready to use; safe for
// concurrent use.
//
// After Stop, a request that reaches the handlers is answered 503 at once:
// fasthttp lets connections still reading a request (a slow upload) go on
// after its drain timeout, and their handlers must not meet the store and
// the click counter closed. Such a request counts while it is refused, so
// Running after Stop covers every request that could touch them.
type Inflight struct {
	stripes [inflightStripes]struct {
		n atomic.Int64
		_ [56]byte
	}
	stopped atomic.Bool
}

// Stop makes later requests answer 503 instead of running.
func (f *Inflight) Stop() { f.stopped.Store(true) }

// stripe is the counter of requests on connection conn.
func (f *Inflight) stripe(conn uint64) *atomic.Int64 {
	return &f.stripes[conn%inflightStripes].n
}

// Running is the number of requests in the handlers.
func (f *Inflight) Running() int64 {
	var n int64
	for i := range f.stripes {
		n += f.stripes[i].n.Load()
	}
	return n
}
