package quiesce

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN in Linux's include/net/tcp_states.h.
const tcpListen = 10

// queueLen reads the accept queue's length: for a listening socket, Linux
// reports it as tcpi_unacked (and the backlog as tcpi_sacked).
func queueLen(rc syscall.RawConn) (int, error) {
	var (
		n    int
		ierr error
	)
	err := rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		switch {
		case err != nil:
			ierr = err
		case info.State != tcpListen:
			ierr = fmt.Errorf("socket state %d, not listening", info.State)
		default:
			n = int(info.Unacked)
		}
	})
	if err != nil {
		return 0, err
	}
	return n, ierr
}

// stopListening shuts the listening socket down at once: Linux then refuses
// new connections (and resets what is still queued) without waiting for the
// descriptor's last user.
func stopListening(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_RDWR) }); err != nil {
		return err
	}
	return serr
}
