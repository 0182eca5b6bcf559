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
type Inflight struct {
	stripes [inflightStripes]struct {
		n atomic.Int64
		_ [56]byte
	}
}

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
