//go:build linux

package netstack

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// arpRequest is the guest asking who has the gateway's address.
func arpRequest(from net.HardwareAddr) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], from)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	copy(f[22:28], from)
	copy(f[28:32], netip.MustParseAddr(GuestIP).AsSlice())
	copy(f[38:42], gatewayAddr.AsSlice())
	return f
}

// A guest sending frames from a hundred thousand made-up MAC addresses
// (and frames too short to have one) gets none of them to the stack: it
// answers, and counts, only the guest's own ARP request.
func TestFramesFromOtherAddressesAreDropped(t *testing.T) {
	mac := GuestMAC("test")
	n, err := New(Config{GuestMAC: mac, LANs: []netip.Prefix{}, Resolvers: []string{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); n.Close() }()
	nic, err := n.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	// Read what comes back until the answer to the guest's own request:
	// every frame sent before it has been through the stack then.
	answered := make(chan struct{})
	go func() {
		buf := make([]byte, 2048)
		for {
			k, err := nic.Read(buf)
			if err != nil {
				return
			}
			if k >= 42 && binary.BigEndian.Uint16(buf[12:]) == 0x0806 && binary.BigEndian.Uint16(buf[20:]) == 2 && net.HardwareAddr(buf[0:6]).String() == mac.String() {
				close(answered)
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	spoofed := make(net.HardwareAddr, 6)
	const frames = 100_000
	for i := range frames {
		binary.LittleEndian.PutUint32(spoofed, rng.Uint32())
		spoofed[0] &^= 1 // unicast
		f := arpRequest(spoofed)
		if i%1000 == 0 {
			f = f[:7] // too short for a source address
		}
		if _, err := nic.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nic.Write(arpRequest(mac)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-answered:
	case <-time.After(time.Minute):
		t.Fatal("no answer to the guest's own ARP request")
	}
	if got := n.s.Stats().ARP.RequestsReceived.Value(); got != 1 {
		t.Errorf("the stack received %d ARP requests, want only the guest's", got)
	}
}
