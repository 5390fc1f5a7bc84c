// Package unixsock makes the unix sockets hostd serves: fresh, and usable
// by their owner alone, from the moment they exist.
package unixsock

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// Listen removes whatever is at path and listens there on a socket of
// mode 0600. The umask is set around the bind so that the socket is never,
// even for an instant, open to others.
func Listen(path string) (net.Listener, error) {
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return l, nil
}
