package netstack

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The frame socketpair's buffers, as vfkit sizes them for vz's
// file-handle attachment: 1 MiB to send and four times that to receive,
// since frames arrive in bursts and Apple asks for a receive buffer well
// above the send one for datagram sockets. macOS refuses a size above its
// kern.ipc.maxsockbuf with ENOBUFS (Linux caps it silently): each pair is
// then halved, down to minSendBuffer.
const (
	sendBuffer    = 1 << 20
	recvBuffer    = 4 * sendBuffer
	minSendBuffer = 64 << 10 // dozens of full-size frames
)

// setsockopt sets a socket option (unix.SetsockoptInt); tests refuse it.
var setsockopt = unix.SetsockoptInt

// sizeFrameBuffers sizes fd's buffers, the largest pair from sendBuffer
// and recvBuffer down that the system takes, or fails saying what to
// raise: frames beyond a small buffer would be dropped in every burst.
func sizeFrameBuffers(fd int, set func(fd, level, opt, value int) error) error {
	var err error
	for snd := sendBuffer; snd >= minSendBuffer; snd /= 2 {
		if err = set(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, snd); err != nil {
			continue
		}
		if err = set(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4*snd); err == nil {
			return nil
		}
	}
	return fmt.Errorf("size the guest NIC's socket buffers (%d KiB to send, %d KiB to receive, or at least %d and %d KiB): %w; raise the system's limit (on macOS: sudo sysctl kern.ipc.maxsockbuf=8388608) and start the instance again",
		sendBuffer>>10, recvBuffer>>10, minSendBuffer>>10, 4*minSendBuffer>>10, err)
}
