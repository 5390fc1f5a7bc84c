package guestagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// The sock_diag protocol (linux/inet_diag.h, linux/sock_diag.h), in the
// few words the agent uses: a dump of every socket of one family and
// protocol, each answered with its flow, uid and inode. golang.org/x/sys
// has the socket's constants but not these structs; they are fixed by
// the kernel's ABI, in the machine's byte order except the ports and
// addresses (network order).
const (
	nlmsgHeaderLen   = 16
	nlmsgError       = 2
	nlmsgDone        = 3
	nlmFRequest      = 0x1
	nlmFDump         = 0x300
	sockDiagByFamily = 20
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	tcpListenState   = 10
)

// diagSocket is one socket of a dump, as the guest sees it: its own port,
// the peer (unspecified for a UDP socket that is not connected), the uid
// it belongs to and its inode, which /proc/PID/fd links name.
type diagSocket struct {
	port  uint16
	peer  netip.AddrPort
	uid   uint32
	inode uint32
}

// diagRequest is the netlink message that asks for a dump of family's
// (AF_INET, AF_INET6) sockets of protocol (IPPROTO_TCP, IPPROTO_UDP), of
// every state but a TCP socket's listening: a listener opens no flow.
func diagRequest(family, protocol uint8, seq uint32) []byte {
	b := make([]byte, nlmsgHeaderLen+inetDiagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], nlmFRequest|nlmFDump)
	ne.PutUint32(b[8:], seq)
	r := b[nlmsgHeaderLen:]
	r[0], r[1] = family, protocol
	states := uint32(0xffffffff)
	if protocol == syscall.IPPROTO_TCP {
		states &^= 1 << tcpListenState
	}
	ne.PutUint32(r[4:], states)
	return b
}

// errDiagDone ends a dump: the kernel sent NLMSG_DONE.
var errDiagDone = errors.New("sock_diag: done")

// parseDiag reads one datagram of a dump's answer, appending its sockets
// to out. It returns errDiagDone at the dump's end, and an error for a
// message that is cut short or a netlink error (a kernel without the
// protocol's diag module answers ENOENT).
func parseDiag(b []byte, out []diagSocket) ([]diagSocket, error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHeaderLen {
		n := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		if n < nlmsgHeaderLen || n > len(b) {
			return out, fmt.Errorf("sock_diag: a message of %d bytes in %d", n, len(b))
		}
		body := b[nlmsgHeaderLen:n]
		switch typ {
		case nlmsgDone:
			return out, errDiagDone
		case nlmsgError:
			if len(body) < 4 {
				return out, errors.New("sock_diag: a short error")
			}
			if errno := int32(ne.Uint32(body)); errno != 0 {
				return out, fmt.Errorf("sock_diag: %w", syscall.Errno(-errno))
			}
		case sockDiagByFamily:
			if len(body) < inetDiagMsgLen {
				return out, fmt.Errorf("sock_diag: a socket of %d bytes", len(body))
			}
			out = append(out, diagMsg(body))
		}
		// Messages are aligned to 4 bytes.
		n = (n + 3) &^ 3
		if n > len(b) {
			break
		}
		b = b[n:]
	}
	return out, nil
}

// diagMsg reads a struct inet_diag_msg.
func diagMsg(m []byte) diagSocket {
	family := m[0]
	id := m[4:52]
	sport := binary.BigEndian.Uint16(id[0:])
	dport := binary.BigEndian.Uint16(id[2:])
	var dst netip.Addr
	if family == syscall.AF_INET6 {
		dst = netip.AddrFrom16([16]byte(id[20:36])).Unmap()
	} else {
		dst = netip.AddrFrom4([4]byte(id[20:24]))
	}
	ne := binary.NativeEndian
	return diagSocket{
		port:  sport,
		peer:  netip.AddrPortFrom(dst, dport),
		uid:   ne.Uint32(m[64:]),
		inode: ne.Uint32(m[68:]),
	}
}
