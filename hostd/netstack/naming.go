package netstack

import (
	"net/netip"
	"slices"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

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
