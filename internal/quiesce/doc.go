// Package quiesce closes a TCP listener without resetting the connections
// the kernel has already completed for it, or is completing.
//
// Closing a listening socket makes the kernel reset every connection still in
// its accept queue (handshakes it completed on the server's behalf that the
// server had not accepted yet) and every handshake still under way. A client
// (a proxy such as nginx) may already have sent a request on such a
// connection; it sees the reset after sending, cannot know whether the
// request was processed, and does not retry a POST. Under steady traffic a
// connection sits in the queue for as long as the accepting goroutine takes
// to be scheduled, and Go's Close only closes the descriptor once that
// goroutine has woken and let go of it, so a plain close at the end of a
// graceful shutdown resets a few requests: the rolling-restart test behind
// nginx failed that way in about one run in ten, and linkgate taking 5,000
// new connections a second reset 21 requests in 40 shutdowns.
//
// Listener.Close first fences the socket: it attaches a socket filter that
// drops a client's SYN, so the kernel starts no new handshake (the client
// sends its SYN again about a second later, finds the socket closed and is
// refused, which a proxy retries on another instance). It then waits until
// the server has accepted everything queued and no handshake is under way,
// and the two have stayed so for a couple of milliseconds (Linux reports the
// accept queue's length as TCP_INFO's tcpi_unacked for a listening socket;
// handshakes under way are its SYN_RECV entries in /proc/net/tcp and tcp6).
// Then it shuts the socket down in the same goroutine (shutdown(2), which
// stops listening at once, unlike close while another goroutine is blocked
// in accept) and closes it. The wait is bounded (DefaultMaxWait); the
// /proc tables take a few milliseconds to read (the kernel walks its whole
// connection hash), so Close usually returns within tens of milliseconds.
//
// Linux refuses socket filters on MPTCP sockets, which Go's listeners are by
// default: listen with ListenTCP. Unfenced (an MPTCP socket, another
// system), Close waits for the accept queue alone, and a handshake completing
// in the microsecond between its last look and the shutdown is reset: under
// the load above, one request in about ten runs of ten shutdowns (CI on
// 2026-12-03). Proxies that stop choosing an instance before it closes
// (Kubernetes endpoints during the preStop sleep) never meet the race.
//
// No library does this (a socket filter, a socket option and a /proc table
// read in a loop, and a shutdown); on other systems Close simply closes.
package quiesce
