package netstack

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/hostd/netstack/splice"
)

func (n *Stack) tcpForwarder() *tcp.Forwarder {
	return tcp.NewForwarder(n.s, 0, n.lim.inFlight(), n.handleTCP)
}

// handleTCP decides a new guest connection, and for an allowed one dials
// the destination before completing the guest's handshake, so a refused
// destination looks refused to the guest.
func (n *Stack) handleTCP(r *tcp.ForwarderRequest) {
	rec, dst, names := n.newFlow(audit.KindTCP, r.ID())
	v := n.currentRules().CheckFlow(policy.TCP, dst, names)
	rec.Rule, rec.Learn = v.Rule, v.Learn
	if !v.Allow {
		n.denyThen(rec, func() { r.Complete(true) }) // RST, once the owner is known
		return
	}
	f := n.admit(rec, true)
	if f == nil {
		r.Complete(true) // over a limit: refused, and audited
		return
	}
	defer f.end()
	lf, rule := n.holdLearned(rec)
	if rule != "" {
		r.Complete(true)
		rec.Rule = rule
		n.deny(rec)
		return
	}
	defer n.releaseLearned(lf)
	out, err := n.dialFlow(context.Background(), dst)
	if err == nil && !lf.own(out) {
		err = errString(ruleLearnEnded)
	}
	if err != nil {
		n.owners.holdAnswer(rec) // the reset ends the guest's socket
		r.Complete(true)
		n.finish(rec, audit.Allow, err)
		return
	}
	var wq waiter.Queue
	ep, err := f.handshake(r, &wq, out)
	if err != nil {
		n.finish(rec, audit.Allow, err)
		return
	}
	in := gonet.NewTCPConn(&wq, ep)
	if !lf.own(in) { // learn mode ended meanwhile: out is closed too
		n.finish(rec, audit.Allow, errString(ruleLearnEnded))
		return
	}
	if n.directIntercept(in, out, names, dst, rec) {
		return
	}
	n.splice(in, out, rec)
}

// dialFlow opens the host side of an allowed flow: the host's loopback for
// the host address, anything else directly or through the upstream proxy.
func (n *Stack) dialFlow(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if dst.Addr() == hostAddr {
		return n.direct(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dst.Port()))))
	}
	return n.dial.DialContext(ctx, "tcp", hostPort(dst))
}

// splice copies both ways until both directions end, counting bytes and
// looking at the guest's first bytes for the name they claim (noteClaim);
// then it writes the flow's audit line. The world's first answer waits
// for the flow's owner (owners.holdAnswer): a client that has its answer may
// be gone before the guest is asked. The guest's side is watched for
// idleness: the reaper closes it, and the world's side with it, which ends
// the splice.
func (n *Stack) splice(guest, world net.Conn, rec *audit.Record) {
	guest = n.watchIdle(guest, world)
	var sniffer sniffer
	res := splice.Join(guest, world, splice.Options{Tap: sniffer.see, BeforeB: func() { n.owners.holdAnswer(rec) }})
	claimed, from := sniffer.name()
	n.noteClaim(rec, claimed, from)
	rec.BytesOut += res.AToB
	rec.BytesIn += res.BToA
	n.finish(rec, audit.Allow, nil)
}

// finish completes a flow's record and writes it.
func (n *Stack) finish(rec *audit.Record, verdict string, err error) {
	rec.Time = time.Now()
	rec.Verdict = verdict
	if !rec.Start.IsZero() {
		rec.DurationMs = float64(rec.Time.Sub(rec.Start).Microseconds()) / 1000
	}
	if err != nil {
		rec.Error = clipTo(err.Error(), maxText)
	}
	n.record(rec)
}

// sniffer keeps the first bytes the guest sends, to name the flow.
type sniffer struct {
	mu   sync.Mutex
	head []byte
	done bool
	n, f string
}

// see is splice's tap on the guest's bytes.
func (s *sniffer) see(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.head = append(s.head, p...)
	if s.n, s.f = SniffName(s.head); s.n != "" || len(s.head) >= sniffLimit {
		s.done, s.head = true, nil
	}
}

func (s *sniffer) name() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.f
}

type errString string

func (e errString) Error() string { return string(e) }
