//go:build linux

// Package netstacktest is a fake guest for the network stack: a second
// gVisor stack on the VM's end of the frame socketpair, configured as a
// guest is after DHCP. Tests and `make bench` drive the stack through it.
package netstacktest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Guest is the fake guest.
type Guest struct {
	S *stack.Stack
}

// New attaches a guest with address ip/24, default route via gateway, to
// nic (the VM's end of the socketpair; the guest takes it over).
func New(nic *os.File, mac net.HardwareAddr, ip, gateway netip.Addr) (*Guest, error) {
	fd, err := syscall.Dup(int(nic.Fd()))
	if err != nil {
		return nil, err
	}
	nic.Close()
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: 1500, EthernetHeader: true, Address: tcpip.LinkAddress(mac), PacketDispatchMode: fdbased.RecvMMsg})
	if err != nil {
		return nil, err
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if err := s.CreateNIC(1, ep); err != nil {
		return nil, errors.New(err.String())
	}
	s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(ip.As4()), PrefixLen: 24}}, stack.AddressProperties{})
	any, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{}), tcpip.MaskFromBytes([]byte{0, 0, 0, 0}))
	s.SetRouteTable([]tcpip.Route{{Destination: any, Gateway: tcpip.AddrFrom4(gateway.As4()), NIC: 1}})
	return &Guest{S: s}, nil
}

// Close stops the guest's stack.
func (g *Guest) Close() { g.S.Close() }

func full(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

// DialTCP connects from the guest to addr ("ip:port").
func (g *Guest) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	c, err := gonet.DialContextTCP(ctx, g.S, full(ap), ipv4.ProtocolNumber)
	if err != nil {
		return nil, err // not a typed nil
	}
	return c, nil
}

// DialUDP opens a connected UDP socket from the guest.
func (g *Guest) DialUDP(addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	raddr := full(ap)
	c, err := gonet.DialUDP(g.S, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Ping sends one echo request and waits for the reply.
func (g *Guest) Ping(dst netip.Addr, timeout time.Duration) error {
	var wq waiter.Queue
	ep, terr := g.S.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return errors.New(terr.String())
	}
	defer ep.Close()
	if terr := ep.Connect(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(dst.As4())}); terr != nil {
		return errors.New(terr.String())
	}
	req := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+4))
	req.SetType(header.ICMPv4Echo)
	copy(req.Payload(), "ping")
	var r bytes.Reader
	r.Reset(req)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{}); terr != nil {
		return errors.New(terr.String())
	}
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	deadline := time.After(timeout)
	for {
		var buf bytes.Buffer
		if _, terr := ep.Read(&buf, tcpip.ReadOptions{}); terr == nil {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return errors.New("no echo reply")
		}
	}
}

// SendIPv4 sends one IPv4 packet of any protocol, with payload, from the
// guest's src to dst through the gateway (whose MAC is gw): what a raw
// socket in a guest can send.
func (g *Guest) SendIPv4(gw net.HardwareAddr, proto uint8, src, dst netip.Addr, payload []byte) error {
	b := make([]byte, header.IPv4MinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: proto,
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], payload)
	if err := g.S.WritePacketToRemote(1, tcpip.LinkAddress(gw), ipv4.ProtocolNumber, buffer.MakeWithData(b)); err != nil {
		return errors.New(err.String())
	}
	return nil
}
