package hostd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
)

// A second hostd for an instance that already has one must leave at once
// and touch nothing: the pid file, the sockets and the run directory are
// the running hostd's, and a second one cleaning them up "as stale" would
// cut every client off the live VM.
func TestRunLeavesAnInstanceAnotherHostdHoldsAlone(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	first, _ := h.ready(t)
	p := h.paths
	qmp := filepath.Join(p.Run(), "qmp.sock") // a backend's, in the run directory
	if err := os.WriteFile(qmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	live := map[string]os.FileInfo{}
	for _, f := range []string{p.PidFile(), p.HostdSock(), p.AgentSock(), qmp} {
		fi, err := os.Lstat(f)
		if err != nil {
			t.Fatal(err)
		}
		live[f] = fi
	}
	pid, err := os.ReadFile(p.PidFile())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := Run(ctx, h.opts); !errors.Is(err, instance.ErrRunning) {
		t.Errorf("a second Run: %v, want instance.ErrRunning", err)
	}
	for f, was := range live {
		if fi, err := os.Lstat(f); err != nil || !os.SameFile(fi, was) {
			t.Errorf("%s: %v; the second hostd removed the running one's file", filepath.Base(f), err)
		}
	}
	if b, err := os.ReadFile(p.PidFile()); err != nil || !bytes.Equal(b, pid) {
		t.Errorf("the pid file holds %q, %v; want %q", b, err, pid)
	}
	if n := h.host.Made(); n != 0 {
		t.Errorf("the second hostd made %d machines", n)
	}
	if !instance.Held(p) {
		t.Error("the lock is no longer held")
	}
	if st := first.status(); !st.Ready {
		t.Errorf("the first hostd, after the second left: %v", st)
	}
}

// Run's context ending is a stop as `cowork stop` asks it: the guest
// powers off through its agent, and hostd cleans up.
func TestCancelStopsGracefully(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	r, m := h.ready(t)
	r.cancel()
	if err := r.wait(); err != nil {
		t.Errorf("Run after its context ended: %v", err)
	}
	s := m.Stats()
	if s.End != machinetest.PoweredOff || s.PowerOffs != 1 || !slices.Equal(s.Stops, []time.Duration{DefaultStopTimeout}) {
		t.Errorf("machine: %+v; want the agent to power it off, in one Stop(%s)", s, DefaultStopTimeout)
	}
	evs := r.all()
	checkPhases(t, evs[3:], controlwire.PhaseStopped)
	if ev := evs[len(evs)-1]; ev.Message != "stopped" || ev.Error != "" {
		t.Errorf("the last event: %v", ev)
	}
	checkGone(t, h.paths)
}

// A stop that comes during the boot ends it: a VM that runs is stopped
// (its agent is not up: the power button does it), and one still
// starting never runs.
func TestCancelDuringBoot(t *testing.T) {
	t.Run("vm running", func(t *testing.T) {
		h := newHostdTest(t, machinetest.Guest{NoAgent: true})
		r := h.start(t)
		m := h.host.Next(t)
		r.until(controlwire.PhaseVMStarted)
		r.cancel()
		if err := r.wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if s := m.Stats(); s.End != machinetest.PoweredOff || !slices.Equal(s.Stops, []time.Duration{DefaultStopTimeout}) {
			t.Errorf("machine: %+v", s)
		}
		checkPhases(t, r.all(), controlwire.PhaseVMStarted, controlwire.PhaseStopped)
		checkGone(t, h.paths)
	})
	t.Run("vm starting", func(t *testing.T) {
		h := newHostdTest(t, machinetest.Guest{StartGate: make(chan struct{})}) // Start holds
		r := h.start(t)
		m := h.host.Next(t)
		if st := r.status(); st.Ready || st.State != "starting" || st.Backend != "" {
			t.Errorf("status while the VM starts: %v", st)
		}
		r.cancel()
		if err := r.wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
		evs := r.all()
		checkPhases(t, evs, controlwire.PhaseStopped)
		if len(evs) == 1 && evs[0].Message != "stopped before the VM started" {
			t.Errorf("the last event: %v", evs[0])
		}
		if s := m.Stats(); s.Started || len(s.Stops) != 0 {
			t.Errorf("machine: %+v", s)
		}
		checkGone(t, h.paths)
	})
	t.Run("before run", func(t *testing.T) {
		h := newHostdTest(t, machinetest.Guest{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := Run(ctx, h.opts); err != nil {
			t.Errorf("Run with its context ended: %v", err)
		}
		if n := h.host.Made(); n != 0 {
			t.Errorf("%d machines made", n)
		}
		checkGone(t, h.paths)
	})
}

// hostd runs again on the folder a hostd left: after a stop, and after a
// crash, whose reason the new boot clears.
func TestRestart(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	r1, m1 := h.ready(t)
	m1.Print(t, "first boot\n")
	r1.stop(&controlwire.StopRequest{})
	if err := r1.wait(); err != nil {
		t.Fatalf("first run: %v", err)
	}

	r2, m2 := h.ready(t)
	checkPhases(t, r2.seen, controlwire.PhaseVMStarted, controlwire.PhaseAgentConnected, controlwire.PhaseReady)
	if m2 == m1 || !r2.status().Ready {
		t.Fatal("the second run is not a new, ready VM")
	}
	if b, err := os.ReadFile(h.paths.SerialLog() + ".1"); err != nil || string(b) != "first boot\n" {
		t.Errorf("the first boot's console: %q, %v", b, err)
	}
	m2.Crash(errors.New("vz: the VM stopped with an error"))
	if err := r2.wait(); err == nil || lastStop(t, h.paths) == "" {
		t.Fatalf("second run: %v, and no stop reason", err)
	}

	r3, _ := h.ready(t)
	if why := lastStop(t, h.paths); why != "" {
		t.Errorf("a new boot kept the last one's stop reason: %q", why)
	}
	if st := r3.status(); !st.Ready || st.Error != "" {
		t.Errorf("third run: %v", st)
	}
}

// A hostd given no way to make a VM says so before it takes the instance.
func TestRunNeedsAMachine(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	h.opts.NewMachine = nil
	if err := Run(context.Background(), h.opts); err == nil || !strings.Contains(err.Error(), "Options.NewMachine is nil") {
		t.Errorf("Run without NewMachine: %v", err)
	}
	if _, err := os.Stat(h.paths.LockFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock file: %v; want none", err)
	}
}
