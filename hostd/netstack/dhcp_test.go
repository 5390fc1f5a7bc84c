//go:build linux

package netstack

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// nextDHCP returns the next DHCP message the stack sends the raw guest,
// with the Ethernet destination it was sent to.
func (g *rawGuest) nextDHCP(t *testing.T) (*dhcpv4.DHCPv4, net.HardwareAddr) {
	t.Helper()
	for {
		f := g.next(t)
		if header.Ethernet(f).Type() != header.IPv4ProtocolNumber {
			continue
		}
		ip := header.IPv4(f[header.EthernetMinimumSize:])
		if ip.TransportProtocol() != header.UDPProtocolNumber {
			continue
		}
		u := header.UDP(ip.Payload())
		if u.SourcePort() != 67 || u.DestinationPort() != 68 {
			continue
		}
		m, err := dhcpv4.FromBytes(u.Payload())
		if err != nil {
			t.Fatalf("the server sent a DHCP message that does not parse: %v", err)
		}
		return m, net.HardwareAddr(f[0:6])
	}
}

// checkLease checks an answer carries the guest's whole configuration.
func checkLease(t *testing.T, m *dhcpv4.DHCPv4, typ dhcpv4.MessageType, xid dhcpv4.TransactionID) {
	t.Helper()
	mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, m.Options)
	if m.MessageType() != typ || m.TransactionID != xid || m.OpCode != dhcpv4.OpcodeBootReply ||
		m.ClientHWAddr.String() != GuestMAC("test").String() ||
		m.YourIPAddr.String() != GuestIP || m.ServerIdentifier().String() != GatewayIP ||
		net.IP(m.SubnetMask()).String() != "255.255.255.0" ||
		len(m.Router()) != 1 || m.Router()[0].String() != GatewayIP ||
		len(m.DNS()) != 1 || m.DNS()[0].String() != GatewayIP ||
		m.DomainSearch() == nil || len(m.DomainSearch().Labels) != 1 || m.DomainSearch().Labels[0] != "cowork.internal" ||
		err != nil || mtu != MTU || m.IPAddressLeaseTime(0) != time.Hour {
		t.Fatalf("want a %v for transaction %v with the guest's lease, got %s", typ, xid, m.Summary())
	}
}

// A booting guest (no address yet, broadcasting) is offered its lease
// and gets it acknowledged, answered by broadcast as it has no address.
func TestDHCPExchange(t *testing.T) {
	g := newRawGuest(t)
	disc, err := dhcpv4.NewDiscovery(g.mac)
	if err != nil {
		t.Fatal(err)
	}
	g.send(t, udpFrame(g.mac, disc.ToBytes()))
	offer, dst := g.nextDHCP(t)
	checkLease(t, offer, dhcpv4.MessageTypeOffer, disc.TransactionID)
	if dst.String() != broadcastMAC.String() {
		t.Fatalf("offer sent to %v, want broadcast", dst)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	g.send(t, udpFrame(g.mac, req.ToBytes()))
	ack, _ := g.nextDHCP(t)
	checkLease(t, ack, dhcpv4.MessageTypeAck, req.TransactionID)
}

// A guest renewing its lease asks from its address, by unicast, and is
// answered there.
func TestDHCPRenewal(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	conn, err := tn.guest.DialUDP(GatewayIP + ":67")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(GuestMAC("test")), dhcpv4.WithClientIP(net.ParseIP(GuestIP)),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(req.ToBytes()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer to the renewal: %v", err)
	}
	ack, err := dhcpv4.FromBytes(buf[:k])
	if err != nil {
		t.Fatal(err)
	}
	checkLease(t, ack, dhcpv4.MessageTypeAck, req.TransactionID)
}

// A hostile guest's DHCP traffic gets no answer and leaves nothing
// behind: garbage, replies, other messages, and thousands of DISCOVERs
// and REQUESTs from random MAC addresses (each would have had a lease of
// its own from a server with an address pool, kept for ever). Each batch
// is followed by the guest's own DISCOVER, whose OFFER must be the next
// DHCP message: the server answers in order, so nothing before it was.
func TestDHCPAnswersOnlyTheGuest(t *testing.T) {
	g := newRawGuest(t)
	rng := rand.New(rand.NewPCG(3, 4))
	randomMAC := func() net.HardwareAddr {
		m := make(net.HardwareAddr, 6)
		for i := range m {
			m[i] = byte(rng.Uint32())
		}
		m[0] &^= 1
		return m
	}
	own := func(typ dhcpv4.MessageType) []byte {
		m, err := dhcpv4.New(dhcpv4.WithHwAddr(g.mac), dhcpv4.WithMessageType(typ))
		if err != nil {
			t.Fatal(err)
		}
		return m.ToBytes()
	}
	reply := mustDiscovery(t, g.mac)
	reply.OpCode = dhcpv4.OpcodeBootReply
	longMAC := mustDiscovery(t, g.mac)
	longMAC.ClientHWAddr = append(append(net.HardwareAddr{}, g.mac...), 0, 0)
	token := mustDiscovery(t, g.mac)
	token.HWType = 6 // IEEE 802, not Ethernet
	hostile := [][]byte{
		{}, {1}, []byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 236), make([]byte, 3000),
		mustDiscovery(t, g.mac).ToBytes()[:100], // cut short
		reply.ToBytes(),                         // a server's (its opcode), not a client's
		own(dhcpv4.MessageTypeRelease), own(dhcpv4.MessageTypeInform), own(dhcpv4.MessageTypeDecline),
		longMAC.ToBytes(), token.ToBytes(),
	}
	for batch := range 40 {
		var frames [][]byte
		if batch == 0 {
			frames = hostile
		}
		for range 50 {
			mac := randomMAC()
			m := mustDiscovery(t, mac)
			if rng.IntN(2) == 0 {
				m.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
			}
			frames = append(frames, m.ToBytes())
		}
		for _, f := range frames {
			g.send(t, udpFrame(g.mac, f))
		}
		disc := mustDiscovery(t, g.mac)
		g.send(t, udpFrame(g.mac, disc.ToBytes()))
		offer, _ := g.nextDHCP(t)
		checkLease(t, offer, dhcpv4.MessageTypeOffer, disc.TransactionID)
	}
}

func mustDiscovery(t *testing.T, mac net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
