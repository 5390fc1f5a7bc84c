package netstack

import (
	"net/netip"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Provenance is the stack's owner lookups on their own (see owners), for
// tools/bench to time what a flow pays for its provenance beside its
// decision and audit line; a Stack has its own, fed by SetOwners.
type Provenance struct{ o *owners }

// NewProvenance asks src, as a stack does; Close stops it.
func NewProvenance(src OwnerSource) *Provenance {
	o := newOwners()
	o.src = src
	return &Provenance{o: o}
}

// Ask queues the lookup of rec's owner, as a new flow does.
func (p *Provenance) Ask(rec *audit.Record, proto string, guestPort int, peer netip.AddrPort) {
	p.o.ask(rec, proto, guestPort, peer)
}

// Hold waits for rec's owner, as a flow's first answer to the guest
// does: at once when the answer is in.
func (p *Provenance) Hold(rec *audit.Record) { p.o.holdAnswer(rec) }

// Then calls write with rec once its owner is known, as a flow's end
// does: at once when the answer is in.
func (p *Provenance) Then(rec *audit.Record, write func(*audit.Record)) { p.o.then(rec, write) }

// Close stops asking, writing what waits.
func (p *Provenance) Close() { p.o.close() }
