//go:build linux

package main

import (
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
