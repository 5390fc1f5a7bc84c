package memtrim

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

// sink keeps allocations from being optimised away.
var sink [][]byte

// burst allocates n bytes of garbage, as a relayed stream would, with
// the collector off for the rest of the test: a GC that happens to run
// at the burst's end would leave nothing to trim (the trimmer then rightly
// does nothing) and made these tests fail about one run in thirty.
func burst(t *testing.T, n int) {
	if old := debug.SetGCPercent(-1); old >= 0 {
		t.Cleanup(func() { debug.SetGCPercent(old) })
	}
	for i := 0; i < n>>16; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
}

// counting returns a trimmer whose trims are counted, not run.
func counting() (*Trimmer, *int) {
	t := New()
	n := 0
	t.free = func() { n++ }
	return t, &n
}

func TestTrimsOnceWhenABurstEnds(t *testing.T) {
	tr, trims := counting()
	burst(t, 32<<20)
	if tr.Tick() {
		t.Fatal("trimmed in the interval that allocated 32 MiB: the daemon was busy")
	}
	if !tr.Tick() || *trims != 1 {
		t.Fatalf("the first quiet interval after a burst did not trim (trims %d)", *trims)
	}
	for range 3 {
		if tr.Tick() {
			t.Fatal("trimmed again with no new work: one forced GC per burst")
		}
	}
	burst(t, 32<<20)
	tr.Tick()
	if !tr.Tick() || *trims != 2 {
		t.Fatalf("the next burst's end did not trim (trims %d)", *trims)
	}
}

func TestNoTrimWhileBusy(t *testing.T) {
	tr, trims := counting()
	for range 5 {
		burst(t, 4<<20)
		tr.Tick()
	}
	if *trims != 0 {
		t.Fatalf("trimmed %d times while every interval allocated", *trims)
	}
}

func TestNoTrimWhenLittleToReturn(t *testing.T) {
	tr, trims := counting()
	tr.MinFree = 1 << 40 // more than any heap here
	burst(t, 32<<20)
	tr.Tick()
	if tr.Tick() || *trims != 0 {
		t.Fatal("forced a GC with less reclaimable heap than MinFree")
	}
}

func TestTrimReturnsMemory(t *testing.T) {
	tr := New()
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	runtime.GC()
	burst(t, 64<<20)
	before := released()
	tr.Tick()
	if !tr.Tick() {
		t.Fatal("no trim after a 64 MiB burst")
	}
	if after := released(); after < before+16<<20 {
		t.Fatalf("released heap went from %d to %d bytes; want at least 16 MiB more returned", before, after)
	}
}
