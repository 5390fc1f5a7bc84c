package agentwire

import (
	"encoding/binary"
	"io"
	"sync"
)

// yamux's frame header, as hashicorp/yamux v0.1.2 writes it: version 0,
// type, flags, stream id, length (big endian). A data frame's length is
// that of the body written right after the header.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// mergeLimit is the largest body written together with its header. A
// larger one is a bulk transfer: its header goes alone, which costs one
// write in many bytes, rather than a copy of the body.
const mergeLimit = 16 << 10

// frameConn writes each yamux data frame whose body is small in one write
// instead of yamux's two (its send loop writes the header, then the
// body). On the serial channel every write costs a trip through the
// emulator: in the guest a virtqueue kick that QEMU's main loop handles
// and sends on as a write of its own, and on the host a chardev read that
// becomes a buffer and an interrupt in the guest. An exec's start,
// started and exit frames each took two of those, the second often
// milliseconds after the first under TCG.
//
// The header of a data frame is held until its body comes and then
// written with it; any other write (a window update, a ping, a body that
// is not the one announced, or a large one) first writes a held header
// alone, so that every byte goes out in order and nothing waits on a
// write that may not come. Reads pass through.
type frameConn struct {
	io.ReadWriteCloser

	mu   sync.Mutex // yamux writes from one goroutine; this keeps it safe if that changes
	held [yamuxHeaderSize]byte
	want int    // the body length the held header announces; 0: none held
	buf  []byte // header and body, written together
}

func newFrameConn(c io.ReadWriteCloser) *frameConn {
	return &frameConn{ReadWriteCloser: c}
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.want > 0 {
		want := c.want
		c.want = 0
		if len(p) == want {
			c.buf = append(append(c.buf[:0], c.held[:]...), p...)
			if _, err := c.ReadWriteCloser.Write(c.buf); err != nil {
				return 0, err
			}
			return len(p), nil
		}
		if _, err := c.ReadWriteCloser.Write(c.held[:]); err != nil {
			return 0, err
		}
	}
	if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == yamuxTypeData {
		if n := binary.BigEndian.Uint32(p[8:12]); n > 0 && n <= mergeLimit {
			copy(c.held[:], p)
			c.want = int(n)
			return len(p), nil
		}
	}
	return c.ReadWriteCloser.Write(p)
}
