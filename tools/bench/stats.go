//go:build linux

package main

import (
	"fmt"
	"sort"
	"time"
)

// samples are the durations one contender took, round after round.
type samples []time.Duration

func (s samples) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := append(samples(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(q * float64(len(c)-1))
	return c[i]
}

func (s samples) p50() time.Duration { return s.quantile(0.5) }
func (s samples) p99() time.Duration { return s.quantile(0.99) }

// interleave runs each contender once per round, so that the machine's
// noise falls on all of them alike, and reverses the order every other
// round (A B C, C B A, ...): whatever running first or after a given
// contender does to a run (a warm cache, a collector still busy with the
// last one's garbage) falls on each in turn.
func interleave(rounds int, fns []func() (time.Duration, error)) ([]samples, error) {
	out := make([]samples, len(fns))
	for r := range rounds {
		for k := range fns {
			i := k
			if r%2 == 1 {
				i = len(fns) - 1 - k
			}
			d, err := fns[i]()
			if err != nil {
				return nil, err
			}
			out[i] = append(out[i], d)
		}
	}
	return out, nil
}

func timed(fn func() error) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		start := time.Now()
		err := fn()
		return time.Since(start), err
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }
