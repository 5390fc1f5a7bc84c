package netstack

import (
	"context"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// stalled is a source that answers nothing until its call is cancelled.
func stalled(ctx context.Context, _ []agentcall.Socket) ([]agentcall.SocketOwner, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A flood of records written as soon as they are asked about (denied
// flows, DNS queries) against a stalled agent holds no more lookups, and
// no more goroutines, than the bound.
func TestDenialFloodIsBounded(t *testing.T) {
	o := newOwners()
	defer o.close()
	o.src = stalled
	g0 := runtime.NumGoroutine()
	for i := range 4 * maxOwnerLookups {
		r := &audit.Record{}
		o.ask(r, "tcp", 1+i%65535, netip.MustParseAddrPort("192.0.2.1:443"))
		o.then(r, func(*audit.Record) {})
	}
	o.mu.Lock()
	q := len(o.queue)
	o.mu.Unlock()
	if q > maxOwnerLookups || runtime.NumGoroutine()-g0 > maxOwnerLookups {
		t.Errorf("queue %d, goroutines +%d", q, runtime.NumGoroutine()-g0)
	}
	if d := o.dropped.Load(); d == 0 {
		t.Error("no lookup refused at the bound")
	}
}

// Records written one after another, each once its owner is in, leave
// no lookup behind: the bound is never reached.
func TestWrittenRecordsLeaveNoLookup(t *testing.T) {
	o := newOwners()
	defer o.close()
	o.src = portOwners(nil)
	peer := netip.MustParseAddrPort("192.0.2.1:443")
	for round := range 8 {
		var written sync.WaitGroup
		for i := range maxOwnerLookups / 4 {
			r := &audit.Record{}
			o.ask(r, "udp", 1+(round*maxOwnerLookups/4+i)%65535, peer)
			written.Add(1)
			o.then(r, func(*audit.Record) { written.Done() })
		}
		written.Wait()
	}
	o.mu.Lock()
	n, held := len(o.byRec), o.held
	o.mu.Unlock()
	if d := o.dropped.Load(); d != 0 || n != 0 || held != 0 {
		t.Errorf("%d lookups dropped, %d records still in byRec, %d lookups held", d, n, held)
	}
}

// Records that reach then while the stack closes are each written once,
// and not by a goroutine of their own after close returned.
func TestThenRacingClose(t *testing.T) {
	const n = 64
	o := newOwners()
	o.src = stalled
	peer := netip.MustParseAddrPort("192.0.2.1:443")
	recs := make([]*audit.Record, n)
	for i := range recs {
		recs[i] = &audit.Record{}
		o.ask(recs[i], "tcp", 1+i, peer)
	}
	var (
		writes   [n]atomic.Int32
		inThen   [n]atomic.Bool
		closed   atomic.Bool
		finished sync.WaitGroup
	)
	write := func(i int) func(*audit.Record) {
		return func(r *audit.Record) {
			if r != recs[i] {
				t.Errorf("record %d written as another", i)
			}
			writes[i].Add(1)
			if closed.Load() && !inThen[i].Load() {
				t.Errorf("record %d written after close returned, and not by its then", i)
			}
		}
	}
	o.then(recs[0], write(0)) // waits for its owner
	start := make(chan struct{})
	for i := 1; i < n; i++ {
		finished.Add(1)
		go func() {
			defer finished.Done()
			<-start
			inThen[i].Store(true)
			o.then(recs[i], write(i))
			inThen[i].Store(false)
		}()
	}
	close(start)
	o.close()
	closed.Store(true)
	if writes[0].Load() != 1 {
		t.Errorf("the record waiting when close began was written %d times by its return", writes[0].Load())
	}
	finished.Wait()
	time.Sleep(10 * time.Millisecond) // anything written late shows
	for i := range writes {
		if w := writes[i].Load(); w != 1 {
			t.Errorf("record %d written %d times", i, w)
		}
	}
}

// Two queries from one socket at once (A and AAAA from one UDP socket,
// or two on one DNS-over-TCP connection) both get its owner.
func TestOneSocketTwoQueries(t *testing.T) {
	o := newOwners()
	defer o.close()
	o.src = portOwners(nil)
	peer := netip.MustParseAddrPort("10.0.2.3:53")
	a, aaaa := &audit.Record{}, &audit.Record{}
	o.ask(a, "udp", 40000, peer)
	o.ask(aaaa, "udp", 40000, peer)
	var got sync.WaitGroup
	got.Add(2)
	for _, r := range []*audit.Record{a, aaaa} {
		o.then(r, func(r *audit.Record) {
			if r.Owner == nil || r.Owner.PID != 40000 {
				t.Errorf("a query's owner: %+v", r.Owner)
			}
			got.Done()
		})
	}
	got.Wait()
}

// The throttle decides before a denial waits for its owner: the denials
// it sums up neither wait nor hold a lookup, however slow the agent, but
// for those a batch sent meanwhile took before the throttle decided
// (held until the batch ends; under -race the loop is slow enough).
func TestThrottledDenialsDoNotWait(t *testing.T) {
	n := &Stack{log: slog.New(slog.DiscardHandler), owners: newOwners()}
	defer n.owners.close()
	var inFlight atomic.Int64
	n.owners.src = func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		inFlight.Add(int64(len(socks)))
		return stalled(ctx, socks)
	}
	n.lim = newLimiter(Limits{}, n.record, n.log, nil, 0)
	defer n.lim.close()
	peer := netip.MustParseAddrPort("192.0.2.1:443")
	for i := range 1000 {
		rec := &audit.Record{Kind: audit.KindTCP, Dst: peer.String(), Rule: "deny: 192.0.2.1"}
		n.owners.ask(rec, "tcp", 1+i, peer)
		n.deny(rec)
	}
	o := n.owners
	o.mu.Lock()
	waiting, held := o.waiting.Len(), o.held
	o.mu.Unlock()
	if sent := inFlight.Load(); waiting > 1 || held > 1+int(sent) || sent > 128 {
		t.Errorf("1000 denials of one destination: %d records wait, %d lookups held, %d in a batch sent; want the first alone, and what was sent", waiting, held, sent)
	}
}

// Closing the stack writes, before Close returns, the records that wait
// for their owner.
func TestStackCloseWritesWhatWaits(t *testing.T) {
	n, err := New(Config{GuestMAC: GuestMAC("test"), LANs: []netip.Prefix{}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	n.SetOwners(stalled)
	r := &audit.Record{}
	n.owners.ask(r, "tcp", 1, netip.MustParseAddrPort("192.0.2.1:443"))
	var got atomic.Bool
	n.owners.then(r, func(*audit.Record) { got.Store(true) })
	start := time.Now()
	n.Close()
	if !got.Load() || time.Since(start) > ownerWait/2 {
		t.Errorf("written %v when Close returned after %v", got.Load(), time.Since(start))
	}
}
