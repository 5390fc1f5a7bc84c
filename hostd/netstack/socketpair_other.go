//go:build !linux

package netstack

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// framePair is a SOCK_DGRAM socketpair, made close-on-exec under the fork
// lock (macOS has no SOCK_CLOEXEC), so no child inherits it by accident.
func framePair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		return fds, err
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	return fds, nil
}
