package netstack

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/acceptloop"
)

// Limits bound what a guest can make hostd hold open. Without them a
// guest that opened ~20,000 flows used up hostd's file descriptors, and
// with them every socket hostd serves.
//
// What a TCP flow costs hostd, measured (TestFlowCost in limits_cost_test.go,
// Linux amd64): one file descriptor (its host-side socket, held from the
// dial on), two goroutines (one copies each way; see hostd/netstack/splice),
// and buffers: ~60 KiB resident (~50 KiB of heap) for a flow that carried
// a little and went quiet, whose copy buffers stay at 16 KiB until a read
// fills one (then 256 KiB); ~1.7 MiB resident for a flow whose
// both ends stopped reading while the other kept sending (the copy
// buffers, and gVisor's send and receive buffers full). So memory, not
// descriptors, is what a hostile guest exhausts first: 1024 such flows
// pin ~1.7 GiB of the host; the 20,000 that used up the descriptors would
// pin ~33 GiB. Hence the defaults.
type Limits struct {
	// MaxFlows is how many flows the guest may have open at once: TCP
	// connections (direct, or to the gateway's proxy, relay and DNS) and
	// UDP flows. More are refused (TCP with a reset; UDP dropped),
	// counted and audited. 0 means DefaultMaxFlows. Either way it is
	// lowered to fit hostd's open-file limit, less fdReserve.
	MaxFlows int
	// MaxPending is how many TCP flows may be opening at once (being
	// decided, dialled, or waiting for the guest to finish its handshake);
	// more are refused like flows over MaxFlows. 0 means DefaultMaxPending.
	MaxPending int
	// IdleTimeout closes a TCP flow that carried no byte either way for
	// this long. 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds how long an allowed TCP flow, once its host
	// side is connected, waits for the guest to answer our SYN-ACK. gVisor
	// goes on retransmitting it for about two minutes; the host connection
	// and the flow's slots are given back after this. 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// Defaults. 1024 flows is four times a browser's whole socket pool
// (Chromium allows 256) and tens of times what npm, pip or cargo open,
// while a guest that stuffs every buffer of every flow pins under 2 GiB of
// the host, not tens. 256 opening at once lets a connection burst through
// and still leaves a guest that dials black holes (30 s each) most of its
// flows. The idle timeout is the floor RFC 5382 sets for a NAT's
// established TCP mappings (REQ-5: no less than 2 h 4 min), so that an
// application's default TCP keep-alive (every 2 h) keeps its connection.
const (
	DefaultMaxFlows    = policy.DefaultMaxFlows
	DefaultMaxPending  = 256
	DefaultIdleTimeout = 2*time.Hour + 4*time.Minute
	// DefaultHandshakeTimeout is generous for a guest under emulation.
	DefaultHandshakeTimeout = 15 * time.Second
)

// fdReserve is the part of hostd's open-file limit no guest flow may use:
// hostd's own files and sockets (logs, hostd.sock and its clients, the
// VM's plumbing), agent.sock's relayed connections (one or two each),
// DNS queries being forwarded (maxDNSInFlight), the proxy's and relay's
// pools of idle upstream connections (64 and 16) and connections to
// published ports. Go raises the soft limit to the hard one at start
// (since Go 1.19), so the limit read here is the hard one.
const fdReserve = 512

// minFlows is the floor MaxFlows is not lowered under, however low the
// open-file limit: a guest network needs a few flows to be of any use.
const minFlows = 64

// maxDNSInFlight bounds the guest's DNS queries being answered at once
// (each forwarded one holds a host socket for up to 5 s per resolver);
// more are answered SERVFAIL, and audited.
const maxDNSInFlight = 128

// withDefaults fills in the defaults and fits MaxFlows under nofile (the
// open-file limit; 0 when unknown). note says what was lowered, if anything.
func (l Limits) withDefaults(nofile uint64) (out Limits, note string) {
	if l.MaxFlows <= 0 {
		l.MaxFlows = DefaultMaxFlows
	}
	if l.MaxPending <= 0 {
		l.MaxPending = DefaultMaxPending
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if nofile > 0 && nofile < math.MaxInt32 {
		fit := max(int(nofile)-fdReserve, minFlows)
		if l.MaxFlows > fit {
			note = fmt.Sprintf("max_flows lowered from %d to %d to fit hostd's open-file limit of %d (less %d for hostd itself); raise the limit (ulimit -n) to allow more",
				l.MaxFlows, fit, nofile, fdReserve)
			l.MaxFlows = fit
		}
	}
	l.MaxPending = min(l.MaxPending, l.MaxFlows)
	return l, note
}

// openFileLimit is the process's soft RLIMIT_NOFILE, 0 when unknown.
func openFileLimit() uint64 {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 0
	}
	return uint64(r.Cur)
}

// FlowStats is the state of the limits, for `cowork status`.
type FlowStats struct {
	Active, Pending      int64 // flows open, and of those, opening
	MaxFlows, MaxPending int
	IdleTimeout          time.Duration
	// Refused counts flows refused by the limits since the stack started;
	// FirstRefused and LastRefused are zero when none was.
	Refused                   int64
	FirstRefused, LastRefused time.Time
}

// limiter enforces Limits for a Stack: it counts flows in and out,
// refuses what is over, closes idle flows, and throttles the audit of
// denials.
type limiter struct {
	lim      Limits
	throttle *audit.Throttle
	idle     *idleSet
	dns      chan struct{} // a token per DNS query being answered
	stop     chan struct{}

	active, pending           atomic.Int64
	refused                   atomic.Int64
	firstRefused, lastRefused atomic.Int64 // unix nanos
}

func newLimiter(lim Limits, write func(*audit.Record), log *slog.Logger, clock func() time.Time, throttleWindow time.Duration) *limiter {
	lim, note := lim.withDefaults(openFileLimit())
	if note != "" {
		log.Warn("network: " + note)
	}
	if clock == nil {
		clock = time.Now
	}
	if throttleWindow <= 0 {
		throttleWindow = audit.DefaultThrottleWindow
	}
	l := &limiter{
		lim:      lim,
		throttle: audit.NewThrottle(write, throttleWindow, audit.DefaultThrottleBurst),
		idle:     newIdleSet(lim.IdleTimeout, clock),
		dns:      make(chan struct{}, maxDNSInFlight),
		stop:     make(chan struct{}),
	}
	go l.run()
	return l
}

// run flushes the throttle's summaries and closes idle flows, until close.
func (l *limiter) run() {
	every := min(time.Second, l.lim.IdleTimeout/4)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.throttle.Flush(time.Now())
			l.idle.reap(l.idle.now())
		}
	}
}

func (l *limiter) close() { close(l.stop) }

// inFlight is gVisor's own bound on TCP handshakes handled at once (SYNs
// beyond it are dropped unseen): a backstop above MaxPending, since a
// handshake the guest never completes stays in gVisor's table for about
// two minutes after HandshakeTimeout gave its slot back.
func (l *limiter) inFlight() int { return 2 * l.lim.MaxPending }

// flow is one admitted flow's hold on the limits.
type flow struct {
	l              *limiter
	opening, ended atomic.Bool
}

// admit takes a slot for a new flow, and for an opening TCP flow a
// pending slot too; over a limit it returns nil and the rule that
// refused it, and counts the refusal.
func (l *limiter) admit(opening bool) (*flow, string) {
	if !takeSlot(&l.active, int64(l.lim.MaxFlows)) {
		l.countRefusal()
		return nil, fmt.Sprintf("limit: %d flows open at once (network.max_flows)", l.lim.MaxFlows)
	}
	f := &flow{l: l}
	if opening {
		if !takeSlot(&l.pending, int64(l.lim.MaxPending)) {
			l.active.Add(-1)
			l.countRefusal()
			return nil, fmt.Sprintf("limit: %d connections opening at once (network.max_pending)", l.lim.MaxPending)
		}
		f.opening.Store(true)
	}
	return f, ""
}

func takeSlot(c *atomic.Int64, limit int64) bool {
	for {
		v := c.Load()
		if v >= limit {
			return false
		}
		if c.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (l *limiter) countRefusal() {
	now := time.Now().UnixNano()
	l.refused.Add(1)
	l.firstRefused.CompareAndSwap(0, now)
	l.lastRefused.Store(now)
}

// established gives back an opening flow's pending slot.
func (f *flow) established() {
	if f.opening.CompareAndSwap(true, false) {
		f.l.pending.Add(-1)
	}
}

// end gives back the flow's slots; it may be called more than once.
func (f *flow) end() {
	if f.ended.CompareAndSwap(false, true) {
		f.established()
		f.l.active.Add(-1)
	}
}

// handshake completes the guest's side of an allowed TCP flow whose host
// side, out, is connected. A guest that has not finished it within
// Limits.HandshakeTimeout gets out closed and the flow's slots back, and its
// endpoint closed should the handshake complete later.
func (f *flow) handshake(r *tcp.ForwarderRequest, wq *waiter.Queue, out net.Conn) (tcpip.Endpoint, error) {
	timer := time.AfterFunc(f.l.lim.HandshakeTimeout, func() {
		out.Close()
		f.end()
	})
	ep, tcpErr := r.CreateEndpoint(wq)
	r.Complete(false)
	late := !timer.Stop()
	if tcpErr != nil {
		out.Close()
		return nil, errString(tcpErr.String())
	}
	if late {
		ep.Close()
		return nil, fmt.Errorf("the guest did not complete its handshake within %s", f.l.lim.HandshakeTimeout)
	}
	f.established()
	return ep, nil
}

// owns ties the flow to c: closing c ends the flow.
func (f *flow) owns(c net.Conn) net.Conn { return &trackedConn{Conn: c, f: f} }

func (l *limiter) stats() FlowStats {
	st := FlowStats{
		Active: l.active.Load(), Pending: l.pending.Load(),
		MaxFlows: l.lim.MaxFlows, MaxPending: l.lim.MaxPending, IdleTimeout: l.lim.IdleTimeout,
		Refused: l.refused.Load(),
	}
	if ns := l.firstRefused.Load(); ns != 0 {
		st.FirstRefused, st.LastRefused = time.Unix(0, ns), time.Unix(0, l.lastRefused.Load())
	}
	return st
}

// FlowStats is the state of the stack's flow limits.
func (n *Stack) FlowStats() FlowStats { return n.lim.stats() }

// admit takes the limits' slots for a new flow whose record is rec; over
// a limit it returns nil, having audited the refusal (throttled).
func (n *Stack) admit(rec *audit.Record, opening bool) *flow {
	if rule := n.auditDown(); rule != "" {
		rec.Rule = rule
		n.deny(rec)
		return nil
	}
	f, rule := n.lim.admit(opening)
	if f == nil {
		rec.Rule = rule
		n.deny(rec)
	}
	return f
}

// deny completes a denied flow's record and writes it through the
// throttle: the first denial of a destination for a rule gets its line,
// repeats within the throttle's window are summed up in one. The throttle
// decides first: only a denial that gets its line waits for its owner,
// and one it sums up gives its lookup up. A denial is never learn mode's,
// even of a flow it let through that a limit then refused.
func (n *Stack) deny(rec *audit.Record) { n.denyThen(rec, nil) }

// denyThen is deny for a refusal that ends the guest's socket: refuse,
// when set, tells the guest (a reset, a 403), after a denial that gets
// its line has its owner, or has waited for it as long as the owners
// allow (owners.hold). The record's time is the decision's.
func (n *Stack) denyThen(rec *audit.Record, refuse func()) {
	rec.Time, rec.Verdict, rec.Learn = time.Now(), audit.Deny, false
	if !rec.Start.IsZero() {
		rec.DurationMs = float64(rec.Time.Sub(rec.Start).Microseconds()) / 1000
	}
	// An outside client's denials are its own (ServeProxyOn): one client's
	// cannot sum up another's.
	key := rec.Kind + " " + rec.Dst + " " + rec.Name + " " + rec.Rule
	if rec.Client != "" {
		key += " " + clientIPOf(rec.Client)
	}
	admitted := n.lim.throttle.Admit(rec, key, rec.Time)
	if admitted && refuse != nil {
		n.owners.hold(rec)
	}
	if refuse != nil {
		refuse()
	}
	if admitted {
		n.record(rec)
	} else {
		n.owners.forget(rec)
	}
}

// limitDNS bounds the DNS queries being answered at once; one over the
// bound is answered SERVFAIL (the resolver in the guest retries) and
// audited.
func (n *Stack) limitDNS(h dns.Handler) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		select {
		case n.lim.dns <- struct{}{}:
			defer func() { <-n.lim.dns }()
			h.ServeDNS(w, q)
		default:
			rec := &audit.Record{Kind: audit.KindDNS, Rule: fmt.Sprintf("limit: %d queries being answered at once", maxDNSInFlight)}
			if len(q.Question) > 0 {
				rec.Name = q.Question[0].Name
			}
			n.deny(rec)
			reply := new(dns.Msg)
			reply.SetRcode(q, dns.RcodeServerFailure)
			_ = w.WriteMsg(reply)
		}
	})
}

// servePublished serves a published port's host listener, riding out a
// failing Accept (out of descriptors) instead of going deaf; an error it
// cannot ride out ends it (see serve), unless removed says the listener
// was closed on purpose.
func (n *Stack) servePublished(l net.Listener, handle func(net.Conn), removed func() bool) {
	n.serve("published port "+l.Addr().String(), func() error {
		err := acceptloop.Serve(l, handle, func(err error, failures int) {
			if err != nil {
				n.log.Warn("published port: accept failed; retrying with backoff", "addr", l.Addr().String(), "err", err)
			} else {
				n.log.Info("published port: accepting again", "addr", l.Addr().String(), "failed_accepts", failures)
			}
		})
		if removed != nil && removed() {
			return errEndedAsAsked
		}
		return err
	})
}
