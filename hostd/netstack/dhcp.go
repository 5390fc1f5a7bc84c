package netstack

import (
	"bytes"
	"errors"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The gateway's DHCP server. There is one guest, with one MAC address
// (cfg.GuestMAC), and it has one lease: GuestIP, for ever renewed. So the
// server keeps no table: a DISCOVER from that MAC gets an OFFER, a
// REQUEST an ACK, and anything else (other MACs, other messages, what
// does not parse) gets no answer. Requests are answered one at a time, in
// the reading loop: a guest flooding the port fills the endpoint's
// bounded receive buffer, and the rest is dropped there.
const (
	dhcpServerPort = 67
	dhcpLease      = time.Hour
	// dhcpMaxMessage is the read buffer: DHCP messages are small (576
	// bytes is what every client must accept).
	dhcpMaxMessage = 4096
	searchDomain   = "cowork.internal"
)

// listenDHCP binds the server's port on the gateway's NIC, for any
// destination address: a booting guest broadcasts, from 0.0.0.0.
func (n *Stack) listenDHCP() (*gonet.UDPConn, error) {
	var wq waiter.Queue
	ep, terr := n.s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	ep.SocketOptions().SetBroadcast(true)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Port: dhcpServerPort}); terr != nil {
		ep.Close()
		return nil, errors.New(terr.String())
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// serveDHCP answers the guest's DHCP messages until conn closes.
func (n *Stack) serveDHCP(conn net.PacketConn) error {
	buf := make([]byte, dhcpMaxMessage)
	for {
		k, peer, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		reply := n.dhcpReply(buf[:k])
		if reply == nil {
			continue
		}
		to, ok := peer.(*net.UDPAddr)
		if !ok {
			continue
		}
		if to.IP == nil || to.IP.IsUnspecified() { // it has no address yet
			to = &net.UDPAddr{IP: net.IPv4bcast, Port: to.Port}
		}
		_, _ = conn.WriteTo(reply, to) // lost like any datagram: the guest asks again
	}
}

// dhcpReply is the answer to one message from the guest, nil for none.
func (n *Stack) dhcpReply(msg []byte) []byte {
	m, err := dhcpv4.FromBytes(msg)
	if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest || m.HWType != iana.HWTypeEthernet ||
		!bytes.Equal(m.ClientHWAddr, n.cfg.GuestMAC) {
		return nil
	}
	var typ dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
	default:
		return nil // RELEASE, DECLINE, INFORM: nothing to keep, nothing to say
	}
	reply, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.ParseIP(GuestIP)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(GatewayIP))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(dhcpLease)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.ParseIP(GatewayIP))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.ParseIP(GatewayIP))),
		dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(MTU)}),
		dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{searchDomain}})),
	)
	if err != nil {
		return nil
	}
	return reply.ToBytes()
}
