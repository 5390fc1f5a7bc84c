package dashboard

import (
	"fmt"
	"testing"
)

// The copies remembered are bounded for one run, for all runs together,
// and in the number of runs; the oldest runs go first, and what is taken
// or ended is no longer counted. The numbers are the bounds the package
// promises (about 1 MiB in all), not the constants: a limit raised or
// removed fails here.
func TestTheCopiesRememberedAreBounded(t *testing.T) {
	const perRun, total, runs = 8 << 10, 32 << 10, 64
	if maxCopies > perRun || maxCopiesTotal > total || maxCopiedRuns > runs {
		t.Fatalf("the bounds %d, %d, %d are over %d, %d, %d", maxCopies, maxCopiesTotal, maxCopiedRuns, perRun, total, runs)
	}
	c := newCopyBook()
	for k := range uint64(100 << 10) {
		c.note("box/one", k)
	}
	if n := len(c.runs["box/one"]); n != maxCopies || c.total != maxCopies {
		t.Fatalf("one run: %d remembered (total %d), want %d", n, c.total, maxCopies)
	}
	if !c.take("box/one", 0) || c.take("box/one", 0) || c.total != maxCopies-1 {
		t.Fatalf("take: total %d", c.total)
	}

	// Runs without their closing record, each full: the total holds, by
	// forgetting the oldest.
	for i := range 20 {
		for k := range uint64(20 << 10) {
			c.note(fmt.Sprintf("box/r%d", i), k)
		}
		if c.total > maxCopiesTotal {
			t.Fatalf("after run %d: %d remembered across runs, over %d", i, c.total, maxCopiesTotal)
		}
	}
	if c.runs["box/one"] != nil || c.runs["box/r0"] != nil {
		t.Error("the oldest runs were kept, not the newest")
	}
	if c.total != maxCopiesTotal || len(c.runs) != maxCopiesTotal/maxCopies || c.runs["box/r19"] == nil {
		t.Errorf("%d remembered in %d runs", c.total, len(c.runs))
	}

	// Many small runs: at most maxCopiedRuns.
	for i := range 1000 {
		c.note(fmt.Sprintf("box/s%d", i), 1)
	}
	if len(c.runs) != maxCopiedRuns || len(c.order) != maxCopiedRuns || c.runs["box/s999"] == nil {
		t.Fatalf("%d runs remembered (%d in order), want the newest %d", len(c.runs), len(c.order), maxCopiedRuns)
	}
	sum := 0
	for _, seen := range c.runs {
		sum += len(seen)
	}
	if sum != c.total {
		t.Errorf("total %d, but %d remembered", c.total, sum)
	}
	for _, run := range append([]string(nil), c.order...) {
		c.end(run)
	}
	if c.total != 0 || len(c.runs) != 0 || len(c.order) != 0 {
		t.Errorf("all ended: total %d, %d runs, %d in order", c.total, len(c.runs), len(c.order))
	}
}
