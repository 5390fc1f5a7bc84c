package netstack

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// fullConn is a frame socket whose buffer is full for its first full
// writes (macOS answers those ENOBUFS), then takes frames.
type fullConn struct {
	net.Conn
	full, writes, taken int
	closed              bool
}

func (c *fullConn) Write(b []byte) (int, error) {
	c.writes++
	if c.writes > 100000 { // a spinning writer: end it, and the test fails
		return 0, syscall.EPIPE
	}
	if c.full < 0 || c.writes <= c.full {
		return 0, syscall.ENOBUFS
	}
	c.taken++
	return len(b), nil
}

func (c *fullConn) Close() error { c.closed = true; return nil }

func TestAFullSocketDelaysThenDropsAFrame(t *testing.T) {
	l := newGuestLink(GuestMAC("gw"), GuestMAC("test"))

	// Full for a moment: the frame goes once the guest has drained.
	c := &fullConn{full: 40}
	l.conn = c
	l.sendLocked([]byte("frame"))
	if c.taken != 1 || c.closed || l.conn == nil || l.dropped.Load() != 0 {
		t.Fatalf("a socket full for 40 writes: %d frames taken, closed %v; want the frame sent and the link kept", c.taken, c.closed)
	}

	// Never drained (a guest that stopped reading its NIC): the frame is
	// dropped after a bounded wait, with a bounded number of tries, and
	// the link stays up for the frames after it.
	c = &fullConn{full: -1}
	l.conn = c
	began := time.Now()
	l.sendLocked([]byte("frame"))
	if c.taken != 0 || c.closed || l.conn == nil {
		t.Fatalf("a socket that stays full: %d taken, closed %v; want the frame dropped and the link kept", c.taken, c.closed)
	}
	if d := l.dropped.Load(); d != 1 {
		t.Errorf("%d frames counted dropped, want 1 (cowork status shows the count)", d)
	}
	if c.writes > 1000 {
		t.Fatalf("%d writes for one frame to a full socket in %v: hostd spins on it", c.writes, time.Since(began))
	}
}
