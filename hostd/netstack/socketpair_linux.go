package netstack

import "golang.org/x/sys/unix"

// framePair is a SOCK_DGRAM socketpair, close-on-exec from the start.
func framePair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
}
