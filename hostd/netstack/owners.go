package netstack

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// OwnerSource names the guest processes that hold guest sockets: the guest
// agent's socket_owners call (hostd/agentrpc.Client.SocketOwners). What it
// answers is the guest's claim.
type OwnerSource func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error)

// Provenance: the stack asks the guest who opened each new flow and DNS
// query, and writes the answer into the flow's audit record.
//
// On the flow's path this costs an enqueue: a lookup is queued (or, with
// the queue full, counted as dropped: the flow never waits for it), and a
// goroutine sends the queue to the agent in batches, ownerBatchDelay after
// the first lookup of a batch, one call at a time. Most flows outlive the
// answer, and their record is written when they end, with the owner. A
// record that is ready first (a refused flow, a DNS answer) waits for the
// answer up to ownerWait, off the flow's path, then goes without it: the
// log then holds it a little later than it happened, which its Time still
// says. A single record per flow keeps the log as it was, and
// `cowork proxy --exec` a filter on one line.
//
// Answers are joined by the flow as the guest sees it (protocol, the
// guest's port, the peer), and only to the lookups of the batch they
// answer: an owner for a flow not asked about, or asked about earlier, is
// dropped. The answer never changes a verdict: the policy has judged the
// flow before the lookup is even sent.
const (
	ownerBatchDelay = 2 * time.Millisecond
	ownerWait       = time.Second
	ownerCallLimit  = 5 * time.Second
	// maxOwnerLookups bounds the lookups queued or awaited at once: as
	// many flows as the stack holds open by default, and some.
	maxOwnerLookups = 8192
)

// ownerSlot is one lookup: done is closed once owner is set, or once the
// lookup ended without one.
type ownerSlot struct {
	sock  agentcall.Socket
	done  chan struct{}
	owner *audit.Owner
}

// owners is the stack's lookups.
type owners struct {
	mu      sync.Mutex
	src     OwnerSource
	queue   []*ownerSlot                 // not sent yet
	byRec   map[*audit.Record]*ownerSlot // every lookup not yet taken by its record
	kick    chan struct{}
	stop    chan struct{}
	stopped bool
	writes  sync.WaitGroup // records waiting for their owner

	// Counters, for tests and `cowork status` one day.
	dropped     atomic.Int64 // lookups not queued: too many
	unsolicited atomic.Int64 // answers for nothing asked in their batch
	late        atomic.Int64 // records written without waiting longer
	failed      atomic.Int64 // calls that failed
}

func newOwners() *owners {
	o := &owners{byRec: map[*audit.Record]*ownerSlot{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	go o.run()
	return o
}

// SetOwners has the stack ask src who opened each new flow from now on;
// nil stops asking (the agent went away).
func (n *Stack) SetOwners(src OwnerSource) {
	n.owners.mu.Lock()
	n.owners.src = src
	n.owners.mu.Unlock()
}

// ask queues the lookup of rec's owner: the guest's socket of proto
// ("tcp", "udp") from its port to peer. It never blocks.
func (o *owners) ask(rec *audit.Record, proto string, guestPort int, peer netip.AddrPort) {
	o.mu.Lock()
	if o.src == nil || o.stopped {
		o.mu.Unlock()
		return
	}
	if len(o.byRec) >= maxOwnerLookups {
		o.mu.Unlock()
		o.dropped.Add(1)
		return
	}
	s := &ownerSlot{sock: agentcall.Socket{Proto: proto, Port: guestPort, Peer: peer.String()}, done: make(chan struct{})}
	o.byRec[rec] = s
	o.queue = append(o.queue, s)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// then calls write with rec once its owner is known, at once when it is
// (or was never asked for), else from another goroutine within ownerWait.
func (o *owners) then(rec *audit.Record, write func(*audit.Record)) {
	o.mu.Lock()
	s := o.byRec[rec]
	delete(o.byRec, rec)
	o.mu.Unlock()
	if s == nil {
		write(rec)
		return
	}
	select {
	case <-s.done:
		rec.Owner = s.owner
		write(rec)
		return
	default:
	}
	o.writes.Add(1)
	go func() {
		defer o.writes.Done()
		t := time.NewTimer(ownerWait)
		defer t.Stop()
		select {
		case <-s.done:
			rec.Owner = s.owner
		case <-t.C:
			o.late.Add(1)
		case <-o.stop:
		}
		write(rec)
	}()
}

// run sends the queued lookups in batches until close.
func (o *owners) run() {
	for {
		select {
		case <-o.kick:
		case <-o.stop:
			return
		}
		select {
		case <-time.After(ownerBatchDelay):
		case <-o.stop:
			return
		}
		for o.batch() {
		}
	}
}

// batch sends one batch and joins its answers; it reports whether more
// are queued.
func (o *owners) batch() bool {
	o.mu.Lock()
	k := min(len(o.queue), agentcall.MaxSocketQueries)
	b := o.queue[:k:k]
	o.queue = o.queue[k:]
	if len(o.queue) == 0 {
		o.queue = nil
	}
	src, more := o.src, len(o.queue) > 0
	o.mu.Unlock()
	if k == 0 {
		return false
	}
	defer func() {
		for _, s := range b {
			select {
			case <-s.done:
			default:
				close(s.done) // unanswered: no owner
			}
		}
	}()
	if src == nil {
		return more
	}
	asked := make(map[agentcall.Socket]*ownerSlot, len(b))
	socks := make([]agentcall.Socket, 0, len(b))
	for _, s := range b {
		if _, dup := asked[s.sock]; !dup {
			socks = append(socks, s.sock)
		}
		asked[s.sock] = s // a later flow of the same socket is the one it holds now
	}
	ctx, cancel := context.WithTimeout(context.Background(), ownerCallLimit)
	go func() {
		select {
		case <-o.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	got, err := src(ctx, socks)
	cancel()
	if err != nil {
		o.failed.Add(1)
		return more
	}
	for _, a := range got {
		s := asked[a.Socket]
		if s == nil {
			o.unsolicited.Add(1)
			continue
		}
		select {
		case <-s.done:
			o.unsolicited.Add(1) // a second answer for one socket
			continue
		default:
		}
		s.owner = claimedOwner(a)
		close(s.done)
	}
	return more
}

// claimedOwner is an answer as the audit log keeps it, clipped again:
// the source checked its bounds, but the log does not rely on it.
func claimedOwner(a agentcall.SocketOwner) *audit.Owner {
	return &audit.Owner{
		Exec: clipTo(a.Exec, 64), PID: a.PID, UID: a.UID,
		Comm: clipTo(a.Comm, agentcall.MaxOwnerComm), Cmd: clipTo(a.Cmd, agentcall.MaxOwnerCmd),
		ClaimedBy: audit.ClaimedByGuest,
	}
}

// close stops asking and writes at once the records that wait.
func (o *owners) close() {
	o.mu.Lock()
	if o.stopped {
		o.mu.Unlock()
		return
	}
	o.stopped = true
	close(o.stop)
	o.mu.Unlock()
	o.writes.Wait()
}
