package netstack

import (
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// icmpFilter sits between the guest's link and the stack and drops the packets
// of protocols nothing forwards (otherProtocol), and judges pings: the
// stack answers every echo it receives (it accepts all addresses), which
// would tell the guest that any host is up. Pings to the gateway and the
// host address are answered; the rest are dropped. All are logged.
type icmpFilter struct {
	*guestLink
	n *Stack
}

func (f *icmpFilter) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if proto == header.IPv4ProtocolNumber {
		if p, dst, ok := otherProtocol(pkt); ok {
			f.n.denyProtocol(p, dst)
			return
		}
		if dst, ok := echoRequest(pkt); ok {
			v := audit.Deny
			rule := "ping: only the gateway and the host answer"
			if dst == gatewayAddr || dst == hostAddr {
				v, rule = audit.Allow, "ping: answered by the gateway"
			}
			f.n.record(&audit.Record{Kind: audit.KindICMP, Verdict: v, Rule: rule, Dst: dst.String(), Time: time.Now()})
			if v == audit.Deny {
				return
			}
		}
	}
	f.guestLink.DeliverNetworkPacket(proto, pkt)
}

// echoRequest finds an ICMPv4 echo request in an IPv4 packet (the link
// has taken off the Ethernet header).
// It only peeks at the packet's first bytes: this runs for every packet.
func echoRequest(pkt *stack.PacketBuffer) (netip.Addr, bool) {
	b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
	if !ok {
		return netip.Addr{}, false
	}
	ip := header.IPv4(b)
	if ip.TransportProtocol() != header.ICMPv4ProtocolNumber || ip.FragmentOffset() != 0 {
		return netip.Addr{}, false
	}
	hl := int(ip.HeaderLength())
	if hl < header.IPv4MinimumSize {
		return netip.Addr{}, false
	}
	b, ok = pkt.Data().PullUp(hl + header.ICMPv4MinimumSize)
	if !ok || header.ICMPv4(b[hl:]).Type() != header.ICMPv4Echo {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(ip.DestinationAddress().As4()), true
}
