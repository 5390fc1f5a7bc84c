package netstack

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// otherProtocol finds an IPv4 packet of a protocol the stack does not
// forward: anything but TCP, UDP and ICMP (of which only echo to the
// gateway and the host is answered). SCTP, GRE, IP-in-IP, 6in4, ESP and
// the experimental numbers go nowhere; they are dropped here, before the
// stack, so that the audit log says so. It peeks at the header only.
func otherProtocol(pkt *stack.PacketBuffer) (uint8, netip.Addr, bool) {
	b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
	if !ok {
		return 0, netip.Addr{}, false
	}
	ip := header.IPv4(b)
	switch p := ip.Protocol(); p {
	case uint8(header.TCPProtocolNumber), uint8(header.UDPProtocolNumber), uint8(header.ICMPv4ProtocolNumber):
		return 0, netip.Addr{}, false
	default:
		return p, netip.AddrFrom4(ip.DestinationAddress().As4()), true
	}
}

var protocolNames = map[uint8]string{
	2: "igmp", 4: "ipip", 41: "ipv6", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp",
	89: "ospf", 103: "pim", 112: "vrrp", 132: "sctp", 136: "udplite", 253: "experimental", 254: "experimental",
}

// denyProtocol audits a dropped packet of another protocol, as the
// limiter allows.
func (n *Stack) denyProtocol(proto uint8, dst netip.Addr) {
	held, ok := n.rawLimit.allow(rawKey{dst, proto}, time.Now())
	if !ok {
		return
	}
	name := protocolNames[proto]
	if name == "" {
		name = "unassigned"
	}
	rule := fmt.Sprintf("ip protocol %d (%s) is not forwarded: only TCP, UDP and ping", proto, name)
	if held > 0 {
		rule += fmt.Sprintf(" (%d more packets dropped without a line)", held)
	}
	n.record(&audit.Record{Kind: audit.KindIP, Verdict: audit.Deny, Rule: rule, Dst: dst.String(), Proto: int(proto), Time: time.Now()})
}

type rawKey struct {
	dst   netip.Addr
	proto uint8
}

// Limits of the audit lines for dropped packets: a guest can send them
// as fast as it likes, to as many addresses as it likes.
const (
	rawQuiet     = 10 * time.Second // one line per destination and protocol
	rawWindow    = 10 * time.Second // and at most rawPerWindow lines in all
	rawPerWindow = 20
	rawKeys      = 4096 // destinations remembered
)

// rawLimiter decides which dropped packets get an audit line: the first
// of each destination and protocol in rawQuiet, and no more than
// rawPerWindow in each rawWindow whatever the destinations. It counts
// what it holds back, for the next line to say.
type rawLimiter struct {
	mu          sync.Mutex
	last        map[rawKey]time.Time
	windowStart time.Time
	lines       int
	held        int
}

func (l *rawLimiter) allow(k rawKey, now time.Time) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.windowStart) >= rawWindow {
		l.windowStart, l.lines = now, 0
	}
	if t, seen := l.last[k]; seen && now.Sub(t) < rawQuiet || l.lines >= rawPerWindow {
		l.held++
		return 0, false
	}
	if l.last == nil || len(l.last) >= rawKeys {
		l.last = make(map[rawKey]time.Time)
	}
	l.last[k] = now
	l.lines++
	held, l.held = l.held, 0
	return held, true
}
