package netstack

import (
	"net/netip"
	"slices"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// newFlow starts the audit record of a new guest flow of kind (tcp, udp)
// to the endpoint id names. The flow is named after what the guest
// resolved its address to through the gateway's DNS, if anything: names
// are all of those, for the rules to decide the flow under.
func (n *Stack) newFlow(kind string, id stack.TransportEndpointID) (rec *audit.Record, dst netip.AddrPort, names []string) {
	dst = addrPort(id.LocalAddress, id.LocalPort)
	rec = &audit.Record{Kind: kind, Start: time.Now(), GuestPort: int(id.RemotePort), Dst: hostPort(dst)}
	n.owners.ask(rec, kind, int(id.RemotePort), dst)
	names = n.bindings.Names(dst.Addr())
	if len(names) > 0 {
		rec.Name, rec.NameFrom = names[0], audit.FromDNS
	}
	return rec, dst, names
}

// noteClaim records the name a flow's own first bytes claim (the TLS
// server name, or the HTTP Host header) beside the name the flow was
// decided under. The guest writes those bytes and can claim any name, so
// the claim never replaces rec.Name; it is flagged when it is none of the
// names known for the destination: rec.Name, the names the guest resolved
// to that address through the gateway's DNS, or the address itself.
func (n *Stack) noteClaim(rec *audit.Record, claimed, from string) {
	if claimed == "" {
		return
	}
	rec.ClaimedName, rec.ClaimedFrom = claimed, from
	rec.NameMismatch = !n.claimFits(rec, claimed)
}

func (n *Stack) claimFits(rec *audit.Record, claimed string) bool {
	if claimed == rec.Name {
		return true
	}
	dst, err := netip.ParseAddrPort(rec.Dst)
	if err != nil {
		return false
	}
	if a, err := netip.ParseAddr(claimed); err == nil {
		return policy.Canonical(a) == dst.Addr()
	}
	return slices.Contains(n.bindings.Names(dst.Addr()), claimed)
}
