package dashboard

// The records of a throwaway run are read twice: from its clone's own
// log while it runs, and again from the parent's runs.jsonl, where they
// are copied when it ends. copyBook remembers the first reading, so that
// the page shows each once. It is bounded: a run whose closing record
// never comes (the guest or hostd killed mid-run) stays only until newer
// runs push it out, and the copies a flood would leave shown twice cost
// less than the memory to remember them.
const (
	maxCopies      = 8 << 10  // records remembered for one run
	maxCopiesTotal = 32 << 10 // across runs, about 1 MiB
	maxCopiedRuns  = 64
)

type copyBook struct {
	runs  map[string]map[uint64]struct{} // by parent/run
	order []string                       // the runs, oldest first
	total int                            // records remembered, across runs
}

func newCopyBook() *copyBook { return &copyBook{runs: map[string]map[uint64]struct{}{}} }

// note remembers the record k of run, unless the run holds maxCopies.
// The oldest runs are forgotten to stay within maxCopiedRuns and
// maxCopiesTotal.
func (c *copyBook) note(run string, k uint64) {
	seen := c.runs[run]
	if seen == nil {
		for len(c.order) >= maxCopiedRuns {
			c.end(c.order[0])
		}
		seen = map[uint64]struct{}{}
		c.runs[run] = seen
		c.order = append(c.order, run)
	}
	if _, ok := seen[k]; ok || len(seen) >= maxCopies {
		return
	}
	for c.total >= maxCopiesTotal && c.order[0] != run {
		c.end(c.order[0])
	}
	if c.total >= maxCopiesTotal {
		return // this run alone fills the book
	}
	seen[k] = struct{}{}
	c.total++
}

// take says whether record k of run was remembered, and forgets it.
func (c *copyBook) take(run string, k uint64) bool {
	seen := c.runs[run]
	if _, ok := seen[k]; !ok {
		return false
	}
	delete(seen, k)
	c.total--
	return true
}

// end forgets run: its closing record came, or it was pushed out.
func (c *copyBook) end(run string) {
	seen, ok := c.runs[run]
	if !ok {
		return
	}
	c.total -= len(seen)
	delete(c.runs, run)
	for i, r := range c.order {
		if r == run {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}
