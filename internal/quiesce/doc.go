// Package quiesce closes a TCP listener without resetting the connections
// the kernel has already completed for it, as far as the kernel allows.
//
// Closing a listening socket makes the kernel reset every connection still in
// its accept queue: handshakes it completed on the server's behalf that the
// server had not accepted yet. A client (a proxy such as nginx) may already
// have sent a request on such a connection; it sees the reset after sending,
// cannot know whether the request was processed, and does not retry a POST.
// Under steady traffic a connection sits in the queue for as long as the
// accepting goroutine takes to be scheduled, and Go's Close only closes the
// descriptor once that goroutine has woken and let go of it, so a plain
// close at the end of a graceful shutdown resets a few requests: the
// rolling-restart test behind nginx failed that way in about one run in ten,
// and linkgate taking 5,000 new connections a second reset 21 requests in 40
// shutdowns.
//
// Listener.Close first waits until the server has accepted everything in the
// queue (Linux reports its length as TCP_INFO's tcpi_unacked for a listening
// socket), then shuts the socket down in the same goroutine (shutdown(2),
// which stops listening at once, unlike close while another goroutine is
// blocked in accept), then closes it. What is left to chance is a handshake
// completing in the microsecond between the last look and the shutdown: the
// same load then reset none in 80 shutdowns. Closing the window entirely
// would need the kernel to stop completing handshakes first; a socket filter
// dropping SYN segments would, but Linux here refuses SO_ATTACH_FILTER on a
// listening TCP socket (EOPNOTSUPP). Proxies that stop choosing an instance
// before it closes (Kubernetes endpoints during the preStop sleep) never meet
// the race.
//
// No library does this (a socket option read in a loop and a shutdown); on
// other systems Close simply closes.
package quiesce
