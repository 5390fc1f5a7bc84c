package netstack

import (
	"fmt"
	"io"
	"sync"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Flows let through by learn mode alone (their verdict's Learn) end when
// learn mode does: SetPolicy leaves open flows alone, and without this a
// guest could open one tunnel (a TCP connection, a proxy CONNECT, a UDP
// flow) while learning and keep an exit through an allowlist after.
//
// A flow holds its place in the registry from its decision to its end
// (holdLearned, releaseLearned) and hands it what closes it as it opens
// (learnedFlow.own). A flow enters it once the limits admitted it, so it
// holds at most Limits.MaxFlows flows; past that (never expected) a flow
// is refused, as a flow over the limits is.

// ruleLearnEnded is the rule of a flow learn mode let through that was
// refused because learn mode ended before it opened.
const ruleLearnEnded = "learn: learn mode ended before the flow opened"

// learnedFlow is one flow that learn mode alone let through.
type learnedFlow struct {
	mu    sync.Mutex
	cut   bool
	conns []io.Closer
}

// own ties c to the flow: cutting the flow closes c. A flow already cut
// closes c at once and reports false. A nil flow (one the policy itself
// allows) owns nothing and always reports true.
func (lf *learnedFlow) own(c io.Closer) bool {
	if lf == nil {
		return true
	}
	lf.mu.Lock()
	if !lf.cut {
		lf.conns = append(lf.conns, c)
		lf.mu.Unlock()
		return true
	}
	lf.mu.Unlock()
	c.Close()
	return false
}

// close cuts the flow: what it owns is closed, and what it is given later.
func (lf *learnedFlow) close() {
	lf.mu.Lock()
	lf.cut = true
	conns := lf.conns
	lf.conns = nil
	lf.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// holdLearned enters the flow rec describes in the registry when learn
// mode alone let it through (rec.Learn), and returns it for the flow to
// own its connections with; nil for any other flow. A flow it refuses
// gets the rule that refuses it: learn mode ended since the flow was
// decided, or (never expected: every flow in it was admitted by the
// limits first) the registry is full. The caller releases what it holds
// (releaseLearned) when the flow ends.
func (n *Stack) holdLearned(rec *audit.Record) (lf *learnedFlow, refused string) {
	if !rec.Learn {
		return nil, ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.learners == 0 {
		return nil, ruleLearnEnded
	}
	if len(n.learned) >= n.lim.lim.MaxFlows {
		return nil, fmt.Sprintf("limit: %d flows open at once that learn mode let through (network.max_flows)", n.lim.lim.MaxFlows)
	}
	lf = &learnedFlow{}
	n.learned[lf] = struct{}{}
	return lf, ""
}

// releaseLearned takes an ended flow out of the registry.
func (n *Stack) releaseLearned(lf *learnedFlow) {
	if lf == nil {
		return
	}
	n.mu.Lock()
	delete(n.learned, lf)
	n.mu.Unlock()
}

// cutLearnedLocked empties the registry when learn mode has ended, and
// returns the flows to cut (once n.mu is unlocked).
func (n *Stack) cutLearnedLocked() map[*learnedFlow]struct{} {
	if n.learners > 0 || len(n.learned) == 0 {
		return nil
	}
	cut := n.learned
	n.learned = map[*learnedFlow]struct{}{}
	return cut
}
