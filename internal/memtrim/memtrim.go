// Package memtrim gives a long-lived, mostly idle daemon's free heap back
// to the OS once a burst of work is over.
//
// Go's background scavenger keeps the heap's free pages up to about the
// last GC's heap goal, and an idle process runs no GC that would lower
// that goal: after hostd relayed a stream or the guest's downloads, it
// kept 15–20 MiB of free heap resident for as long as it stayed idle
// (issue 17 measured 52 MiB idle after traffic against 30 MiB after the
// boot). A Trimmer looks at the runtime's own counters every interval and,
// once an interval passed with next to no allocation after one that had
// some, runs debug.FreeOSMemory once: one forced GC per burst, none while
// the daemon stays busy or stays idle.
package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The runtime's counters a Trimmer reads.
const (
	allocsMetric  = "/gc/heap/allocs:bytes"
	freeMetric    = "/memory/classes/heap/free:bytes"
	objectsMetric = "/memory/classes/heap/objects:bytes"
	liveMetric    = "/gc/heap/live:bytes"
)

// Trimmer decides when to return free heap. The zero value is not ready;
// use New.
type Trimmer struct {
	// Quiet is the most an interval may allocate and still count as idle.
	Quiet uint64
	// MinFree is the least reclaimable heap worth a forced GC: free pages
	// plus what was allocated over the last GC's live heap, most of which
	// is garbage once a burst is over.
	MinFree uint64

	samples   []metrics.Sample
	lastAlloc uint64
	busy      bool // allocation beyond Quiet since the last trim
	free      func()
}

// New returns a trimmer with defaults for a daemon like hostd: an
// interval allocating under 256 KiB is idle, and less than 2 MiB of free
// heap is not worth a GC.
func New() *Trimmer {
	t := &Trimmer{
		Quiet:   256 << 10,
		MinFree: 2 << 20,
		samples: []metrics.Sample{{Name: allocsMetric}, {Name: freeMetric}, {Name: objectsMetric}, {Name: liveMetric}},
		free:    debug.FreeOSMemory,
	}
	t.lastAlloc, _ = t.read()
	return t
}

// Run calls Tick every interval until ctx ends.
func (t *Trimmer) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Tick()
		}
	}
}

// Tick looks at what was allocated since the last Tick and returns the
// free heap to the OS when a busy stretch just ended. It reports whether
// it did.
func (t *Trimmer) Tick() bool {
	alloc, free := t.read()
	delta := alloc - t.lastAlloc
	t.lastAlloc = alloc
	if delta > t.Quiet {
		t.busy = true
		return false
	}
	if !t.busy || free < t.MinFree {
		return false
	}
	t.busy = false
	t.free()
	t.lastAlloc, _ = t.read() // the GC's own allocations are not work
	return true
}

// read returns the bytes allocated so far and the heap a GC could give
// back (free pages, and objects beyond the last GC's live heap).
func (t *Trimmer) read() (alloc, reclaimable uint64) {
	metrics.Read(t.samples)
	free, objects, live := t.samples[1].Value.Uint64(), t.samples[2].Value.Uint64(), t.samples[3].Value.Uint64()
	reclaimable = free
	if objects > live {
		reclaimable += objects - live
	}
	return t.samples[0].Value.Uint64(), reclaimable
}
