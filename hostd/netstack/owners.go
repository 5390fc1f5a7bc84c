package netstack

import (
	"container/list"
	"context"
	"net"
	"net/http"
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
// maxOwnerLookups held, counted as dropped: the flow never waits for it),
// and a goroutine sends the queue to the agent in batches,
// ownerBatchDelay after the first lookup of a batch, one call at a time.
// The guest gets the first answer to a flow (the world's first bytes, a
// response through the proxy or the relay, a DNS answer, a refusal) only
// once the lookup is answered, ownerHold at most (see hold and
// holdAnswer): a client that has its answer may close its socket, or
// exit, before the agent looks, and the guest's kernel then lists no
// owner. The wait overlaps the trip to the world, so it costs an answer
// that comes sooner than the agent's no more than the difference. Most
// flows outlive the answer, and their record is written when they end,
// with the owner. A record that is ready before its lookup is answered,
// without having waited (a world that closed without a byte, an answer
// past maxOwnerHolds, a UDP flow that got no reply), waits for it up to
// ownerWait, off the flow's path, in one queue that one goroutine
// expires, then goes without it: the log then holds it a little later
// than it happened, which its Time still says. A single record per flow keeps the log as it was, and
// `cowork proxy --exec` a filter on one line.
//
// A lookup is held, and counts against maxOwnerLookups, from ask until
// both its record has taken it and its batch has ended (or the stack
// closed): however fast the guest opens flows or gets them refused, and
// however slowly its agent answers, the queue, the batch in flight and
// the records waiting stay within the bound. A lookup whose record went
// without it (written late, or not written at all: a throttled denial)
// is not sent.
//
// Answers are joined by the flow as the guest sees it (protocol, the
// guest's port, the peer), and only to the lookups of the batch they
// answer: an owner for a flow not asked about, or asked about earlier, is
// dropped. An answer goes to every lookup of its socket in the batch (a
// resolver sends A and AAAA from one socket at once). The answer never
// changes a verdict: the policy has judged the flow before the lookup is
// even sent.
const (
	ownerBatchDelay = 2 * time.Millisecond
	ownerWait       = time.Second
	ownerCallLimit  = 5 * time.Second
	// maxOwnerLookups bounds the lookups held at once: as many flows as
	// the stack holds open by default, and some.
	maxOwnerLookups = 8192
	// ownerHold and maxOwnerHolds bound how long, and how many at once,
	// answers wait for their owner before the guest gets them (see hold).
	ownerHold     = time.Second
	maxOwnerHolds = 256
)

// ownerSlot is one lookup. Its fields are its owners' mu's.
type ownerSlot struct {
	sock    agentcall.Socket
	owner   *audit.Owner
	taken   bool // its record left byRec (then, forget)
	settled bool // its batch ended: owner is all it will get

	// While its record waits for the answer: the record, its writer,
	// when it stops waiting, and its place in owners.waiting.
	rec      *audit.Record
	write    func(*audit.Record)
	deadline time.Time
	wait     *list.Element

	// answered, made by wait, is closed when the batch ends.
	answered chan struct{}
	// hurried: it was held in vain, or its refusal went unheld (wait):
	// its record is written at once, without waiting for it again.
	hurried bool
}

// unwanted: nothing will read the slot's answer.
func (s *ownerSlot) unwanted() bool { return s.taken && s.wait == nil }

// owners is the stack's lookups.
type owners struct {
	mu      sync.Mutex
	src     OwnerSource
	queue   []*ownerSlot                 // not sent yet
	byRec   map[*audit.Record]*ownerSlot // every lookup not yet taken by its record
	held    int                          // lookups not both taken and settled
	waiting list.List                    // of *ownerSlot, by deadline
	kick    chan struct{}                // to run: a lookup is queued
	wake    chan struct{}                // to expire: waiting was empty
	stop    chan struct{}
	stopped bool
	writing sync.WaitGroup // records being written by run or expire
	holding int            // answers and refusals waiting (wait)

	// Counters, for tests and `cowork status` one day.
	dropped     atomic.Int64 // lookups not queued: too many
	unheld      atomic.Int64 // answers and refusals not held: too many held
	unsolicited atomic.Int64 // answers for nothing asked in their batch
	late        atomic.Int64 // records written without waiting longer
	failed      atomic.Int64 // calls that failed
}

func newOwners() *owners {
	o := &owners{byRec: map[*audit.Record]*ownerSlot{}, kick: make(chan struct{}, 1), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go o.run()
	go o.expire()
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
	if o.src == nil || o.stopped || o.byRec[rec] != nil {
		o.mu.Unlock()
		return
	}
	if o.held >= maxOwnerLookups {
		o.mu.Unlock()
		o.dropped.Add(1)
		return
	}
	s := &ownerSlot{sock: agentcall.Socket{Proto: proto, Port: guestPort, Peer: peer.String()}}
	o.held++
	o.byRec[rec] = s
	o.queue = append(o.queue, s)
	o.mu.Unlock()
	signal(o.kick)
}

// then calls write with rec once its owner is known: at once when it is,
// or was never asked for, or the stack closed; else from another
// goroutine within ownerWait.
func (o *owners) then(rec *audit.Record, write func(*audit.Record)) {
	o.mu.Lock()
	s := o.take(rec)
	if s == nil || s.settled || s.hurried || o.stopped {
		if s != nil {
			rec.Owner = s.owner
			if !s.settled && s.hurried {
				o.late.Add(1)
			}
		}
		o.mu.Unlock()
		write(rec)
		return
	}
	s.rec, s.write, s.deadline = rec, write, time.Now().Add(ownerWait)
	s.wait = o.waiting.PushBack(s)
	first := o.waiting.Len() == 1
	o.mu.Unlock()
	if first {
		signal(o.wake)
	}
}

// forget gives up rec's lookup: its record will not be written. The
// lookup is still last in the queue, as a rule (a throttled denial): it
// is taken out, and held no longer. Once rec was written, it does
// nothing.
func (o *owners) forget(rec *audit.Record) {
	o.mu.Lock()
	if s := o.take(rec); s != nil && len(o.queue) > 0 && o.queue[len(o.queue)-1] == s {
		o.queue[len(o.queue)-1] = nil
		o.queue = o.queue[:len(o.queue)-1]
		o.held--
	}
	o.mu.Unlock()
}

// hold waits until rec's lookup is answered, or ownerHold has passed, or
// the stack closes, before the guest learns of a refusal that ends its
// socket (a SYN answered by a reset, a proxy's 403 after which the client
// hangs up, the relay's 401): once it has ended, the guest's kernel lists
// it no more, and no owner can be found. The refusal is decided, and
// stays a refusal: the wait delays only the guest learning of it. At most
// maxOwnerHolds wait at once (answers and refusals together), so that a
// guest whose agent stalls holds up that many for ownerHold and no more:
// the others return at once. A refusal that goes without its owner (not
// held, or held in vain) has its record written at once (then): its
// socket ends with it, so a later answer would find nothing, and the
// relay's line is written before the guest has its answer, as without
// provenance.
func (o *owners) hold(rec *audit.Record) { o.wait(rec, true) }

// holdAnswer is hold for the first answer to a flow that is let through
// (the world's first bytes, a response through the proxy or the relay, a
// DNS answer, a reset after a failed dial): a client that has its answer
// may close its socket, or exit, before the agent looks. An answer not
// held (too many wait) leaves its record to wait for the owner as any
// record does (then), up to ownerWait.
func (o *owners) holdAnswer(rec *audit.Record) { o.wait(rec, false) }

// wait is hold and holdAnswer. A lookup that was held in vain once is not
// waited for again: a record waits ownerHold at most in all.
func (o *owners) wait(rec *audit.Record, refusal bool) {
	o.mu.Lock()
	s := o.byRec[rec]
	if s == nil || s.settled || s.hurried || o.stopped {
		o.mu.Unlock()
		return
	}
	if o.holding >= maxOwnerHolds {
		s.hurried = refusal
		o.mu.Unlock()
		o.unheld.Add(1)
		return
	}
	if s.answered == nil {
		s.answered = make(chan struct{})
	}
	answered := s.answered
	o.holding++
	o.mu.Unlock()
	t := time.NewTimer(ownerHold)
	select {
	case <-answered:
	case <-t.C:
	case <-o.stop:
	}
	t.Stop()
	o.mu.Lock()
	o.holding--
	s.hurried = !s.settled
	o.mu.Unlock()
}

// take hands rec's lookup, if any, over to the record; o.mu is held.
func (o *owners) take(rec *audit.Record) *ownerSlot {
	s := o.byRec[rec]
	if s == nil {
		return nil
	}
	delete(o.byRec, rec)
	s.taken = true
	if s.settled {
		o.held--
	}
	return s
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// expire writes the records whose wait is over, without their owner,
// until close.
func (o *owners) expire() {
	t := time.NewTimer(ownerWait)
	t.Stop()
	for {
		var due <-chan time.Time
		if next := o.writeLate(time.Now()); next > 0 {
			t.Reset(next)
			due = t.C
		}
		select {
		case <-due:
		case <-o.wake:
		case <-o.stop:
			t.Stop()
			return
		}
		t.Stop()
	}
}

// writeLate writes the records whose wait ended by now, and returns how
// long until the next one's ends (0: none waits).
func (o *owners) writeLate(now time.Time) time.Duration {
	var due []*ownerSlot
	o.mu.Lock()
	for e := o.waiting.Front(); e != nil; e = o.waiting.Front() {
		s := e.Value.(*ownerSlot)
		if s.deadline.After(now) {
			break
		}
		o.waiting.Remove(e)
		s.wait = nil
		due = append(due, s)
	}
	var next time.Duration
	if e := o.waiting.Front(); e != nil {
		next = max(e.Value.(*ownerSlot).deadline.Sub(now), time.Millisecond)
	}
	o.writeLocked(due) // unlocks
	o.late.Add(int64(len(due)))
	return next
}

// writeLocked unlocks o.mu, then writes the records of ss, which were in
// o.waiting: close waits for them.
func (o *owners) writeLocked(ss []*ownerSlot) {
	if len(ss) == 0 {
		o.mu.Unlock()
		return
	}
	o.writing.Add(1) // o.waiting held them: not stopped
	o.mu.Unlock()
	defer o.writing.Done()
	for _, s := range ss {
		s.rec.Owner = s.owner
		s.write(s.rec)
		s.rec, s.write = nil, nil
	}
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
	asked := make(map[agentcall.Socket][]*ownerSlot, len(b))
	socks := make([]agentcall.Socket, 0, len(b))
	for _, s := range b {
		if s.unwanted() {
			continue
		}
		if asked[s.sock] == nil {
			socks = append(socks, s.sock)
		}
		asked[s.sock] = append(asked[s.sock], s)
	}
	o.mu.Unlock()
	if k == 0 {
		return false
	}
	var got []agentcall.SocketOwner
	if src != nil && len(socks) > 0 {
		got = o.call(src, socks)
	}
	o.settle(b, asked, got)
	return more
}

// call asks src about socks, giving up at close.
func (o *owners) call(src OwnerSource, socks []agentcall.Socket) []agentcall.SocketOwner {
	ctx, cancel := context.WithTimeout(context.Background(), ownerCallLimit)
	defer cancel()
	go func() {
		select {
		case <-o.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	got, err := src(ctx, socks)
	if err != nil {
		o.failed.Add(1)
		return nil
	}
	return got
}

// settle ends batch b: the answers got go to the lookups asked about
// their socket, and the records that waited for them are written.
func (o *owners) settle(b []*ownerSlot, asked map[agentcall.Socket][]*ownerSlot, got []agentcall.SocketOwner) {
	o.mu.Lock()
	for _, a := range got {
		ss := asked[a.Socket]
		if ss == nil {
			o.unsolicited.Add(1) // or a second answer for one socket
			continue
		}
		delete(asked, a.Socket)
		for _, s := range ss {
			s.owner = claimedOwner(a)
		}
	}
	var ready []*ownerSlot
	for _, s := range b {
		s.settled = true
		if s.answered != nil {
			close(s.answered)
		}
		if !s.taken {
			continue
		}
		o.held--
		if s.wait != nil {
			o.waiting.Remove(s.wait)
			s.wait = nil
			ready = append(ready, s)
		}
	}
	o.writeLocked(ready) // unlocks
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

// close stops asking and writes, before it returns, the records that
// wait; a record that reaches then afterwards is written at once.
func (o *owners) close() {
	o.mu.Lock()
	if o.stopped {
		o.mu.Unlock()
		return
	}
	o.stopped = true
	close(o.stop)
	var ready []*ownerSlot
	for e := o.waiting.Front(); e != nil; e = e.Next() {
		s := e.Value.(*ownerSlot)
		s.wait = nil
		ready = append(ready, s)
	}
	o.waiting.Init()
	o.mu.Unlock()
	for _, s := range ready {
		s.rec.Owner = s.owner
		s.write(s.rec)
		s.rec, s.write = nil, nil
	}
	o.writing.Wait()
}

// askRequester looks up the guest process behind a request to one of the
// gateway's HTTP services (the proxy, the relay): the guest's socket is
// the one connected from r's remote port to the gateway's service port,
// and rec's guest port is its port. The lookup is the record's, as a
// flow's is; the caller must write the record (record, finish, deny) or
// forget it. It returns the gateway's address, the socket's peer.
func (n *Stack) askRequester(rec *audit.Record, r *http.Request) netip.AddrPort {
	guest, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.AddrPort{}
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	gateway := netip.AddrPortFrom(tcp.AddrPort().Addr().Unmap(), tcp.AddrPort().Port())
	rec.GuestPort = int(guest.Port())
	n.owners.ask(rec, "tcp", rec.GuestPort, gateway)
	return gateway
}
