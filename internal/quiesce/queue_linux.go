package quiesce

import (
	"encoding/binary"
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

// synFilter is a classic BPF socket filter that drops a TCP segment with SYN
// set and ACK clear (a client's first segment) and keeps every other: Linux
// runs a listening socket's filter on each segment it receives, from the TCP
// header on, whose byte 13 holds the flags.
func synFilter() []unix.SockFilter {
	const syn, ack = 0x02, 0x10
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13},
		{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: syn | ack},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: syn, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // keep
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
	}
}

// fence stops the kernel from starting handshakes on the listening socket:
// a client's SYN is dropped (it retransmits it about a second later, and by
// then the socket is closed and the client is refused), while handshakes
// already under way complete into the accept queue. A connection accepted
// afterwards inherits the filter. Linux refuses socket filters on an MPTCP
// socket (EOPNOTSUPP): see ListenTCP.
func fence(rc syscall.RawConn) error {
	prog := synFilter()
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err != nil {
		return err
	}
	return serr
}

// handshakes counts the connections to local port whose handshake the kernel
// has begun and not completed (its request sockets, state SYN_RECV), in this
// network namespace, by asking sock_diag (netlink) for TCP sockets in that
// state, IPv4 and IPv6. The kernel walks its whole connection hash for each
// question (a millisecond or two here) but sends only the matches, so the
// cost does not grow with the connections open or in TIME_WAIT, as reading
// /proc/net/tcp does (50 ms with 13,000 of them). The kernel matches the
// port itself; the check here only guards the count. A connection from an
// IPv4 client to a dual-stack listener is in the IPv6 answer.
func handshakes(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// Close runs this under its lock: a kernel that never answers must not
	// hold the shutdown.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	n, buf := 0, make([]byte, 1<<16)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		m, err := dumpSynRecv(fd, buf, family, uint16(port))
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

// Sizes and offsets of Linux's include/uapi/linux/inet_diag.h structures.
const (
	diagReqLen   = 56 // struct inet_diag_req_v2
	diagMsgLen   = 72 // struct inet_diag_msg
	tcpSynRecv   = 3  // TCP_SYN_RECV
	diagSportOff = 4  // inet_diag_msg.id.idiag_sport, big-endian
)

// dumpSynRecv asks sock_diag for family's TCP sockets in SYN_RECV whose
// local port is port, and counts the answers, read into buf.
func dumpSynRecv(fd int, buf []byte, family uint8, port uint16) (int, error) {
	req := make([]byte, unix.SizeofNlMsghdr+diagReqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))                   // nlmsg_len
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)           // nlmsg_type
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP) // nlmsg_flags
	binary.NativeEndian.PutUint32(req[8:], 1)                                  // nlmsg_seq
	r := req[unix.SizeofNlMsghdr:]
	r[0], r[1] = family, unix.IPPROTO_TCP               // sdiag_family, sdiag_protocol
	binary.NativeEndian.PutUint32(r[4:], 1<<tcpSynRecv) // idiag_states
	binary.BigEndian.PutUint16(r[8:], port)             // id.idiag_sport
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	n := 0
	for {
		got, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:got])
		if err != nil {
			return 0, fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				// Both carry an errno (negated), zero when all is well: a
				// dump that failed part-way ends with DONE and its error.
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return 0, fmt.Errorf("sock_diag: %w", syscall.Errno(-e))
					}
				}
				return n, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.Data) >= diagMsgLen && m.Data[1] == tcpSynRecv &&
					binary.BigEndian.Uint16(m.Data[diagSportOff:]) == port {
					n++
				}
			}
		}
	}
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
