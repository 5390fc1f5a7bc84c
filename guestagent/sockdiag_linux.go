package guestagent

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// maxDiagSockets ends a dump that goes on past any guest cowork made.
const maxDiagSockets = 1 << 17

// dumpSockets lists family's sockets of protocol with one sock_diag dump.
func dumpSockets(family, protocol uint8) ([]diagSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Sendto(fd, diagRequest(family, protocol, 1), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 64<<10)
	var out []diagSocket
	for len(out) < maxDiagSockets {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return out, fmt.Errorf("sock_diag: %w", err)
		}
		out, err = parseDiag(buf[:n], out)
		if errors.Is(err, errDiagDone) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
