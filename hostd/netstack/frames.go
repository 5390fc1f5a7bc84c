package netstack

import (
	"bytes"
	"net"
	"sync/atomic"
)

// guestFrames is the stack's end of the guest's NIC as the link reads
// it: only frames sent from the guest's own MAC address pass. Nothing the
// guest may do needs another address (its NIC has one, set by hostd), so
// a frame from any other is forged: the stack never sees it, and never
// answers it or learns a neighbour from it. Frames too short to have a
// source address are dropped too.
type guestFrames struct {
	net.Conn
	mac     net.HardwareAddr
	dropped atomic.Int64
}

// ethHeader is an Ethernet header's length; the source address is at 6.
const ethHeader = 14

func (g *guestFrames) Read(b []byte) (int, error) {
	for {
		n, err := g.Conn.Read(b)
		if err != nil || n >= ethHeader && bytes.Equal(b[6:12], g.mac) {
			return n, err
		}
		g.dropped.Add(1)
	}
}
