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
// sends its SYN again about a second later, two more after that if Close is
// still waiting, and is refused once the socket has closed; a proxy retries
// it on another instance). It then waits until no handshake is under way and
// the server has accepted everything queued, and the two have stayed so for
// a couple of milliseconds. Handshakes under way are the port's SYN_RECV
// sockets, which sock_diag (netlink) lists; the accept queue's length Linux
// reports as TCP_INFO's tcpi_unacked for a listening socket. Then it shuts the socket down in the same goroutine
// (shutdown(2), which stops listening at once, unlike close while another
// goroutine is blocked in accept) and closes it. Each look takes a few
// milliseconds (the kernel walks its whole connection hash for the netlink
// answer), so Close usually returns within tens of milliseconds; the wait is
// bounded (DefaultMaxWait). A handshake that will never complete (a client
// gone after its SYN, a port scan) holds Close for the whole bound, and is
// then dropped: its client had sent no request.
//
// What is left to chance is the last ACK of a handshake the kernel answered
// with a SYN cookie (under a SYN flood: it keeps no record of those),
// arriving more than the settle time after the fence, and a connection
// completed in the microseconds between the last look and the shutdown by
// such an ACK. Connections accepted after the fence keep its filter (a socket
// inherits its listener's), which drops a stray SYN on them instead of
// answering it with a challenge ACK; they are closed after one response.
//
// Linux refuses socket filters on MPTCP sockets, which Go's listeners are by
// default: listen with ListenTCP. Unfenced (an MPTCP socket, sock_diag
// refused, another system), Close waits for the accept queue alone, and a
// handshake completing in the microsecond between its last look and the
// shutdown, or still under way then, is reset: CI met that once in about a
// dozen runs of the end-to-end test's ten shutdowns under a connection flood
// (2026-12-03). Proxies that stop choosing an instance before it closes
// (Kubernetes endpoints during the preStop sleep) never meet the race.
//
// No library does this (a socket filter, a socket option and a netlink
// question in a loop, and a shutdown); on other systems Close simply closes.
package quiesce
