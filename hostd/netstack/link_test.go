//go:build linux

package netstack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// rawGuest is the VM's end of the frame socket, driven frame by frame.
type rawGuest struct {
	n   *Stack
	fd  int
	mac net.HardwareAddr
}

func newRawGuest(t *testing.T) *rawGuest {
	t.Helper()
	mac := GuestMAC("test")
	n, err := New(Config{GuestMAC: mac, LANs: []netip.Prefix{}, Resolvers: []string{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	nic, err := n.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); n.Close(); nic.Close() })
	fd := int(nic.Fd())
	// Generous: the machine is loaded; a test waits this long only when
	// the frame it waits for never comes, and then it fails.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 20}); err != nil {
		t.Fatal(err)
	}
	return &rawGuest{n: n, fd: fd, mac: mac}
}

func (g *rawGuest) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := unix.Write(g.fd, frame); err != nil {
		t.Fatal(err)
	}
}

// next returns the next frame the stack sends the guest, failing the
// test when none comes.
func (g *rawGuest) next(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	k, err := unix.Read(g.fd, buf)
	for err == unix.EINTR { // a signal of the runtime's (preemption), not the stack's silence
		k, err = unix.Read(g.fd, buf)
	}
	if err != nil {
		t.Fatalf("no frame from the stack: %v", err)
	}
	return buf[:k]
}

// arpReply is the ARP reply in frame, if it is one: who claims which IP.
func arpReply(frame []byte) (dst net.HardwareAddr, claimer net.HardwareAddr, ip netip.Addr, ok bool) {
	if len(frame) < header.EthernetMinimumSize+header.ARPSize || header.Ethernet(frame).Type() != header.ARPProtocolNumber {
		return nil, nil, netip.Addr{}, false
	}
	a := header.ARP(frame[header.EthernetMinimumSize:])
	if !a.IsValid() || a.Op() != header.ARPReply {
		return nil, nil, netip.Addr{}, false
	}
	ip, _ = netip.AddrFromSlice(a.ProtocolAddressSender())
	return net.HardwareAddr(frame[0:6]), net.HardwareAddr(a.HardwareAddressSender()), ip, true
}

// whoHas is the guest's ARP request for ip, from its own MAC; the
// Ethernet destination and the ARP sender's MAC can be set apart.
func whoHas(guest net.HardwareAddr, ip netip.Addr, ethDst, arpSender net.HardwareAddr) []byte {
	f := arpRequest(guest)
	copy(f[0:6], ethDst)
	copy(f[22:28], arpSender)
	copy(f[38:42], ip.AsSlice())
	return f
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// The stack accepts every address, so its ARP would claim any IP for the
// gateway; only the gateway's and the host's addresses are answered. The
// frames go in order through one reader and the answers come back in
// order: the gateway's answer, asked last, comes after any other's.
func TestARPAnswersOnlyTheGatewayAndTheHost(t *testing.T) {
	g := newRawGuest(t)
	gw, _ := net.ParseMAC(gatewayMAC)
	for _, ip := range []string{"192.168.127.3", "192.168.127.253", "10.0.0.1", HostIP, GatewayIP} {
		g.send(t, whoHas(g.mac, netip.MustParseAddr(ip), broadcastMAC, g.mac))
	}
	for _, want := range []string{HostIP, GatewayIP} {
		dst, claimer, ip, ok := arpReply(g.next(t))
		if !ok || ip.String() != want {
			t.Fatalf("got an answer for %v (ARP reply: %v), want the one for %s only", ip, ok, want)
		}
		if dst.String() != g.mac.String() || claimer.String() != gw.String() {
			t.Fatalf("the answer for %s goes to %v and claims %v, want to %v with %v", ip, dst, claimer, g.mac, gw)
		}
	}
}

// Frames reach the stack only when sent to the gateway's MAC or to all;
// the stack's frames reach the guest only when sent to the guest's MAC or
// to all (the guest has one address; an ARP request naming another MAC as
// its sender gets its answer sent there, so it goes nowhere).
func TestLinkPassesOnlyFramesBetweenTheGuestAndTheGateway(t *testing.T) {
	g := newRawGuest(t)
	gw, _ := net.ParseMAC(gatewayMAC)
	other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9}
	gwIP := netip.MustParseAddr(GatewayIP)
	g.send(t, whoHas(g.mac, gwIP, other, g.mac)) // to someone else
	g.send(t, whoHas(g.mac, gwIP, g.mac, g.mac)) // to itself
	g.send(t, whoHas(g.mac, gwIP, broadcastMAC, other))
	g.send(t, whoHas(g.mac, gwIP, gw, g.mac)) // to the gateway: answered
	dst, _, ip, ok := arpReply(g.next(t))
	if !ok || ip != gwIP || dst.String() != g.mac.String() {
		t.Fatalf("first frame back: ARP reply %v for %v to %v; want only the answer to the request sent to the gateway", ok, ip, dst)
	}
	if got := g.n.s.Stats().ARP.RequestsReceived.Value(); got != 2 {
		t.Fatalf("the stack received %d ARP requests, want 2 (the broadcast one and the one to the gateway)", got)
	}
}
