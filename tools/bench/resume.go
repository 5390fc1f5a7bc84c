//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"time"
)

// runCowork runs the CLI at cowork to its end; its output is the error's.
func runCowork(cowork string, args ...string) error {
	out, err := exec.Command(cowork, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cowork %v: %v\n%s", args, err, out)
	}
	return nil
}

// resumeTimes is a suspended guest back to a usable exec against a cold
// start to the same (issue 18), in interleaved rounds; each round stops
// (or suspends) the instance first, untimed but for the suspend.
type resumeTimes struct {
	cold, resumed samples
	suspends      []time.Duration
}

// measureResume times rounds of each on the named running instance, and
// leaves it running.
func measureResume(cowork, name string, rounds int) (*resumeTimes, error) {
	progress("guest: resume vs cold start of %s to a usable exec, %d rounds, interleaved", name, rounds)
	run := func(args ...string) error { return runCowork(cowork, append([]string{"--name", name}, args...)...) }
	usable := func() error {
		if err := run("start"); err != nil {
			return err
		}
		return run("exec", "--no-shell", "-w", "/", "true")
	}
	r := &resumeTimes{}
	rs, err := interleave(rounds, []func() (time.Duration, error){
		func() (time.Duration, error) {
			if err := run("stop"); err != nil {
				return 0, err
			}
			return timed(usable)()
		},
		func() (time.Duration, error) {
			began := time.Now()
			if err := run("suspend"); err != nil {
				return 0, err
			}
			r.suspends = append(r.suspends, time.Since(began))
			return timed(usable)()
		},
	})
	if err != nil {
		return nil, err
	}
	r.cold, r.resumed = rs[0], rs[1]
	return r, nil
}

// rows adds the ratio, and the suspend's own time, for guest.
func (r *resumeTimes) rows(t *table, guest string) {
	x := ratio(r.resumed.p50(), r.cold.p50())
	t.add("`cowork start` + exec `true` ("+guest+"): resume from suspend ÷ cold start", secs(r.resumed.p50()), secs(r.cold.p50()), x, "≤ 0.2×", x <= 0.2)
	s := append([]time.Duration(nil), r.suspends...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) > 0 {
		t.add("  `cowork suspend` ("+guest+": share unplugged, guest saved, VM stopped)", secs(s[len(s)/2]), "", 0, "", false)
	}
}

// measureClone times `cowork clone SRC --snapshot` to a usable exec in the
// clone, rounds times, against the cold start + exec of resumeTimes (the
// same guest): SRC is snapshotted once (running: suspended, snapshotted
// with its memory, resumed) and stopped, one guest at a time.
func measureClone(cowork, src string, rounds int) (clone, snap samples, err error) {
	progress("guest: clone from a snapshot of %s to a usable exec, %d rounds", src, rounds)
	run := func(args ...string) error { return runCowork(cowork, args...) }
	d, err := timed(func() error { return run("--name", src, "snapshot", "create", "bench") })()
	if err != nil {
		return nil, nil, err
	}
	snap = samples{d}
	if err := run("--name", src, "stop"); err != nil {
		return nil, nil, err
	}
	for i := range rounds {
		name := fmt.Sprintf("bench-clone-%d", i)
		d, err := timed(func() error {
			if err := run("clone", src, name, "--snapshot", "bench", "--start"); err != nil {
				return err
			}
			return run("--name", name, "exec", "--no-shell", "-w", "/", "true")
		})()
		if derr := run("--name", name, "delete", "--force"); err == nil {
			err = derr
		}
		if err != nil {
			return nil, nil, err
		}
		clone = append(clone, d)
	}
	return clone, snap, nil
}

// cloneRow adds the ratio of a clone from a snapshot with memory (a fork,
// resumed) to a cold start of its source, guest.
func cloneRow(t *table, cloned, cold samples, guest string) {
	x := ratio(cloned.p50(), cold.p50())
	t.add("`cowork clone --snapshot` + start + exec `true` ÷ cold start + exec `true` ("+guest+"; a snapshot with memory: the clone resumes it)", secs(cloned.p50()), secs(cold.p50()), x, "≤ 0.25×", x <= 0.25)
}

// throwawayTimes is `exec --rm true` with a clone ready in the pool, warm
// and hot, against `exec true` on the running instance (issue 18).
type throwawayTimes struct {
	exec, warm, hot samples
}

// measureThrowaway times rounds of each on the instance src, which has a
// snapshot and is stopped: it is started (the plain exec's target; the
// clones are of its snapshot), and stopped again at the end with its pool
// drained. The refill each run starts is waited out, untimed, before the
// next round.
func measureThrowaway(cowork, src string, rounds int) (*throwawayTimes, error) {
	progress("guest: exec --rm true with a warm, then a hot, clone ready vs exec true on the running instance, %d rounds each", rounds)
	run := func(args ...string) error { return runCowork(cowork, append([]string{"--name", src}, args...)...) }
	defer run("stop")
	defer run("pool", "drain")
	if err := run("start"); err != nil {
		return nil, err
	}
	plain := timed(func() error { return run("exec", "--no-shell", "-w", "/", "true") })
	rm := func(kind string) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			if err := waitPool(cowork, src, kind); err != nil {
				return 0, err
			}
			return timed(func() error { return run("exec", "--rm", "--no-shell", "-w", "/", "true") })()
		}
	}
	r := &throwawayTimes{}
	for _, kind := range []string{"warm", "hot"} {
		if err := run("pool", "fill", "--size", "1", "--"+kind); err != nil {
			return nil, err
		}
		rs, err := interleave(rounds, []func() (time.Duration, error){plain, rm(kind)})
		if err != nil {
			return nil, err
		}
		r.exec = append(r.exec, rs[0]...)
		if kind == "warm" {
			r.warm = rs[1]
		} else {
			r.hot = rs[1]
		}
		if err := run("pool", "drain"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// waitPool waits until src's pool has a clone of kind ready (a run's
// refill has finished).
func waitPool(cowork, src, kind string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := exec.Command(cowork, "--name", src, "pool", "ls", "--json").Output()
		if err != nil {
			return fmt.Errorf("cowork pool ls: %v", err)
		}
		var l struct {
			Clones []struct{ State string } `json:"clones"`
		}
		if err := json.Unmarshal(out, &l); err != nil {
			return err
		}
		for _, c := range l.Clones {
			if c.State == kind {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s clone in the pool of %s after 5 minutes: %s", kind, src, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rows adds the two ratios.
func (r *throwawayTimes) rows(t *table) {
	for _, c := range []struct {
		kind string
		s    samples
	}{{"warm (suspended, resumed)", r.warm}, {"hot (running)", r.hot}} {
		x := ratio(c.s.p50(), r.exec.p50())
		t.add("`cowork exec --rm true`, a "+c.kind+" clone ready ÷ `cowork exec true` on the running instance (the test guest)", secs(c.s.p50()), secs(r.exec.p50()), x, "≤ 5×", x <= 5)
	}
}
