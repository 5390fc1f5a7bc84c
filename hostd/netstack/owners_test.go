package netstack

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// portOwners is a fake agent: the owner of every socket asked about is
// the pid of its port, in the exec of its protocol, so that a record
// shows which lookup its owner answered.
func portOwners(calls *atomic.Int64) OwnerSource {
	return func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		if calls != nil {
			calls.Add(1)
		}
		var out []agentcall.SocketOwner
		for _, s := range socks {
			out = append(out, agentcall.SocketOwner{Socket: s, PID: s.Port, UID: 1000, Exec: "exec-" + s.Proto, Comm: "curl", Cmd: "curl " + s.Peer})
		}
		return out, nil
	}
}

// A source that never answers holds up no flow, and no record more than
// ownerWait; lookups past the bound are dropped, never waited for.
func TestOwnerLookupsAreBounded(t *testing.T) {
	o := newOwners()
	defer o.close()
	release := make(chan struct{})
	defer close(release)
	o.src = func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, ctx.Err()
	}
	peer := netip.MustParseAddrPort("192.0.2.1:443")
	recs := make([]*audit.Record, maxOwnerLookups+10)
	start := time.Now()
	for i := range recs {
		recs[i] = &audit.Record{}
		o.ask(recs[i], "tcp", 1+i%65535, peer)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d lookups took %v to queue", len(recs), took)
	}
	if d := o.dropped.Load(); d != 10 {
		t.Errorf("%d lookups dropped, want the 10 over the bound", d)
	}
	var written sync.WaitGroup
	written.Add(1)
	start = time.Now()
	o.then(recs[0], func(r *audit.Record) {
		if r.Owner != nil {
			t.Errorf("an owner nobody gave: %+v", r.Owner)
		}
		written.Done()
	})
	written.Wait()
	if took := time.Since(start); took < ownerWait/2 || took > ownerWait+time.Second {
		t.Errorf("the record waited %v; want about %v", took, ownerWait)
	}
	// A record whose lookup was dropped is written at once.
	done := false
	o.then(recs[len(recs)-1], func(*audit.Record) { done = true })
	if !done {
		t.Error("a record without a lookup waited")
	}
}

// Closing the stack writes the records that wait for an owner at once.
func TestOwnersCloseWritesWhatWaits(t *testing.T) {
	o := newOwners()
	o.src = func(ctx context.Context, _ []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	r := &audit.Record{}
	o.ask(r, "tcp", 1, netip.MustParseAddrPort("192.0.2.1:443"))
	var got atomic.Bool
	o.then(r, func(*audit.Record) { got.Store(true) })
	start := time.Now()
	o.close()
	if !got.Load() || time.Since(start) > ownerWait/2 {
		t.Errorf("written %v after %v", got.Load(), time.Since(start))
	}
}

// The cost a flow pays for its provenance on the host: the lookup queued
// at its start, and its owner joined to its record at its end (the
// answer already in). Its median must leave the decision and its audit
// line within their 10 µs (tools/bench).
func TestOwnerJoinCost(t *testing.T) {
	o := newOwners()
	defer o.close()
	o.src = portOwners(nil)
	peer := netip.MustParseAddrPort("192.0.2.1:443")
	const n = 20000
	ask := make([]time.Duration, 0, n)
	join := make([]time.Duration, 0, n)
	recs := make([]*audit.Record, n)
	for i := range recs {
		recs[i] = &audit.Record{}
		t0 := time.Now()
		o.ask(recs[i], "tcp", 1+i%65535, peer)
		ask = append(ask, time.Since(t0))
		if i%256 == 255 {
			time.Sleep(5 * time.Millisecond) // let the batches answer, as flows take time
		}
	}
	time.Sleep(20 * time.Millisecond)
	for _, r := range recs {
		t0 := time.Now()
		o.then(r, func(*audit.Record) {})
		join = append(join, time.Since(t0))
	}
	slices.Sort(ask)
	slices.Sort(join)
	t.Logf("queue a lookup: p50 %v, p99 %v; join its answer: p50 %v, p99 %v; %d late", ask[n/2], ask[n*99/100], join[n/2], join[n*99/100], o.late.Load())
	if ask[n/2]+join[n/2] > 2*time.Microsecond {
		t.Errorf("a flow's provenance costs %v at the median; want ≤ 2 µs", ask[n/2]+join[n/2])
	}
}

// BenchmarkOwnerAsk is what the flow's path pays: queueing the lookup.
// (Its join, at the flow's end, is a map lookup: TestOwnerJoinCost.)
func BenchmarkOwnerAsk(b *testing.B) {
	o := newOwners()
	defer o.close()
	o.src = portOwners(nil)
	peer := netip.MustParseAddrPort("192.0.2.1:443")
	recs := make([]*audit.Record, 0, 1<<16)
	i := 0
	for b.Loop() {
		r := &audit.Record{}
		o.ask(r, "tcp", 1+i%65535, peer)
		recs = append(recs, r)
		if len(recs) == cap(recs) || len(recs) >= maxOwnerLookups/2 {
			b.StopTimer()
			for _, r := range recs {
				o.then(r, func(*audit.Record) {})
			}
			recs = recs[:0]
			b.StartTimer()
		}
		i++
	}
}
