package hostd

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/hostd/savestate"
)

// standingBy waits until the standby hostd r says it holds the guest.
func (r *hostdRun) standingBy() *controlwire.Status {
	r.t.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		if st := r.status(); st.State == controlwire.StateStandby {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.t.Fatalf("hostd never stood by; its log:\n%s", r.h.log.String())
	return nil
}

// standBy starts hostd with --standby on the instance's saved guest,
// and returns it once it holds the guest, with the machine it holds.
func (h *hostdTest) standBy(t *testing.T) (*hostdRun, *machinetest.Machine) {
	t.Helper()
	h.opts.Standby = true
	r := h.start(t)
	m := h.host.Next(t)
	r.standingBy()
	return r, m
}

func (r *hostdRun) wake() error {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	return r.api.Wake(ctx)
}

// A standby loads the saved guest and holds it paused, the saved state
// left in place, until Wake: then the guest runs on as a resume's does.
func TestStandbyHoldsTheGuestUntilWoken(t *testing.T) {
	h := newSuspendTest(t)
	m1 := h.suspended(t)
	r, m2 := h.standBy(t)
	if st := r.status(); st.Ready {
		t.Errorf("ready while standing by: %+v", st)
	}
	time.Sleep(50 * time.Millisecond) // a guest run on would be running by now
	if s := m2.State(); s != machine.Paused || !m2.Resumed() || m2.Generation() != m1.Generation() {
		t.Fatalf("standing by, the VM is %s (resumed %v, generation %d of %d), want the saved guest loaded and paused", s, m2.Resumed(), m2.Generation(), m1.Generation())
	}
	if _, err := savestate.Load(h.paths.Suspend()); err != nil {
		t.Fatalf("standing by, the saved state is not there to fall back on: %v", err)
	}
	if err := r.wake(); err != nil {
		t.Fatal(err)
	}
	evs := r.until(controlwire.PhaseReady)
	if !strings.Contains(evs[0].Message, "resumed") {
		t.Errorf("first event %q, want it to say the VM resumed", evs[0].Message)
	}
	if st := r.status(); !st.Ready || st.State != string(machine.Running) {
		t.Errorf("status after the wake: %+v", st)
	}
	if _, err := os.Lstat(h.paths.Suspend()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the saved state is still there to resume again: %v", err)
	}
	if err := r.wake(); err != nil {
		t.Errorf("a second wake: %v", err)
	}
}

// A wake that comes while the guest is still loading runs it once it is
// loaded.
func TestAnEarlyWakeWaitsForTheLoad(t *testing.T) {
	h := newSuspendTest(t)
	h.suspended(t)
	h.opts.Standby = true
	r := h.start(t)
	if err := r.wake(); err != nil {
		t.Fatal(err)
	}
	h.host.Next(t)
	r.until(controlwire.PhaseReady)
}

// A standby stopped (or killed: nothing is retired before the wake)
// leaves the guest saved: the next start resumes it.
func TestAStandbyStoppedLeavesTheGuestSaved(t *testing.T) {
	h := newSuspendTest(t)
	m1 := h.suspended(t)
	r, m2 := h.standBy(t)
	r.stop(&controlwire.StopRequest{Force: true})
	if err := r.wait(); err != nil {
		t.Fatalf("hostd after a stop while standing by: %v", err)
	}
	if s := m2.State(); s != machine.Stopped {
		t.Errorf("the held VM is %s after the stop", s)
	}
	h.opts.Standby = false
	r = h.start(t)
	m3 := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if !m3.Resumed() || m3.Generation() != m1.Generation() {
		t.Errorf("the start after a stopped standby: resumed %v, generation %d; want the saved guest, %d", m3.Resumed(), m3.Generation(), m1.Generation())
	}
}

// runAlone runs hostd with no one following it (it may end before it
// serves its control socket), and returns what Run returned.
func runAlone(t *testing.T, h *hostdTest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	err := Run(ctx, h.opts)
	if ctx.Err() != nil {
		t.Fatalf("hostd ran until its context ended; its log:\n%s", h.log.String())
	}
	return err
}

// A standby with nothing to resume boots nothing, and leaves a state it
// cannot resume where it is for the next start to judge in the open.
func TestAStandbyBootsNothingCold(t *testing.T) {
	t.Run("nothing saved", func(t *testing.T) {
		h := newSuspendTest(t)
		h.opts.Standby = true
		if err := runAlone(t, h); !errors.Is(err, errNothingToHold) {
			t.Errorf("hostd ended with %v, want %v", err, errNothingToHold)
		}
		if h.host.Made() > 0 {
			if m := h.host.Next(t); m.Stats().Started || m.Resumed() {
				t.Errorf("a VM ran: %+v", m.Stats())
			}
		}
	})
	t.Run("a state that does not fit", func(t *testing.T) {
		h := newSuspendTest(t)
		h.suspended(t)
		h.cfg.CPUs = 3
		if err := h.cfg.Save(h.paths.Dir()); err != nil {
			t.Fatal(err)
		}
		h.opts.Standby = true
		if err := runAlone(t, h); !errors.Is(err, errNothingToHold) || !strings.Contains(err.Error(), "CPU count") {
			t.Errorf("hostd ended with %v, want %v naming the CPU count", err, errNothingToHold)
		}
		if _, err := savestate.Load(h.paths.Suspend()); err != nil {
			t.Errorf("the state was moved: %v", err)
		}
	})
}

// Wake is refused, and changes nothing, on a hostd that is not standing
// by.
func TestWakeWithoutAStandbyIsRefused(t *testing.T) {
	h := newSuspendTest(t)
	r, _ := h.ready(t)
	err := r.wake()
	var werr *controlwire.Error
	if !errors.As(err, &werr) || werr.Code != controlwire.CodeFailedPrecondition {
		t.Errorf("wake on a running instance: %v", err)
	}
	if st := r.status(); !st.Ready {
		t.Errorf("status after the refused wake: %+v", st)
	}
}

// A woken standby runs one exec of hostd's own beside the rest of its
// resume, so that the run's first command finds the exec path
// translated; a guest resumed or booted otherwise does not.
func TestAResumedGuestsExecPathIsWarmed(t *testing.T) {
	const warmed = "warmed the guest's exec path"
	h := newSuspendTest(t)
	r := h.start(t) // a cold boot: nothing to warm
	h.host.Next(t)
	r.until(controlwire.PhaseReady)
	time.Sleep(300 * time.Millisecond) // a warm-up exec takes milliseconds here
	r.stop(&controlwire.StopRequest{Force: true})
	r.wait()
	if strings.Contains(h.log.String(), warmed) || strings.Contains(h.log.String(), "warm-up exec") {
		t.Fatal("a guest booted cold had its exec path warmed")
	}
	awaitWarmed := func(n int, how string) {
		t.Helper()
		deadline := time.Now().Add(patience)
		for strings.Count(h.log.String(), warmed) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no exec warmed the guest %s; hostd's log:\n%s", how, h.log.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	h.suspended(t)
	r = h.start(t)
	h.host.Next(t)
	r.until(controlwire.PhaseReady)
	awaitWarmed(1, "resumed by a start")
	r.stop(&controlwire.StopRequest{Force: true})
	r.wait()
	h.suspended(t)
	r, _ = h.standBy(t)
	if err := r.wake(); err != nil {
		t.Fatal(err)
	}
	r.until(controlwire.PhaseReady)
	awaitWarmed(2, "woken from a standby")
}

// The guest's end while it stands by ends the standby, the saved state
// kept; so does a run that took the clone and died before waking it.
func TestAStandbyEndsWithItsVMOrItsRun(t *testing.T) {
	t.Run("the VM ends", func(t *testing.T) {
		h := newSuspendTest(t)
		h.suspended(t)
		r, m := h.standBy(t)
		m.Crash(errors.New("qemu was killed"))
		if err := r.wait(); err == nil || !strings.Contains(err.Error(), "stood by") {
			t.Errorf("hostd ended with %v, want the VM's end while it stood by", err)
		}
		if _, err := savestate.Load(h.paths.Suspend()); err != nil {
			t.Errorf("the saved state went with the standby: %v", err)
		}
	})
	t.Run("a wake and a stop at once", func(t *testing.T) {
		h := newSuspendTest(t)
		h.suspended(t)
		h.opts.Standby = true
		ctx, cancel := context.WithCancel(context.Background())
		r := h.startCtx(t, ctx, cancel)
		h.host.Next(t)
		r.standingBy()
		cancel() // the stop first: a wake after it must not run the guest
		r.wake()
		r.wait()
		if _, err := savestate.Load(h.paths.Suspend()); err != nil {
			t.Errorf("the saved state was retired by a wake after the stop: %v", err)
		}
	})
}

// A pool clone's standby ends by itself when the run that took it dies
// before waking it, or when its parent is deleted, the state kept; while
// it waits for a run, and while its parent is there, it stands by.
func TestAStandbyEndsWhenItsReasonGoes(t *testing.T) {
	defer func(p time.Duration) { orphanPoll = p }(orphanPoll)
	orphanPoll = 20 * time.Millisecond
	for _, tc := range []struct {
		name, want string
		gone       func(t *testing.T, h *hostdTest)
	}{
		{"its run died", "the run that took this clone is gone", func(t *testing.T, h *hostdTest) {
			if err := os.WriteFile(h.paths.Claim(), []byte("4242\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"its parent was deleted", "parent box is gone", func(t *testing.T, h *hostdTest) {
			p, _ := instance.PathsFor("box")
			if err := os.Remove(p.Config()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSuspendTest(t)
			parent, err := instance.PathsFor("box")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(parent.Dir(), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(parent.Config(), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			h.cfg.Throwaway = &instance.Throwaway{Parent: "box", Snapshot: "base"}
			if err := h.cfg.Save(h.paths.Dir()); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(h.paths.Claim(), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			h.suspended(t)
			r, _ := h.standBy(t)
			time.Sleep(10 * orphanPoll)
			r.standingBy() // a free clone with its parent there waits on
			tc.gone(t, h)
			if err := r.wait(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("hostd ended with %v, want %q", err, tc.want)
			}
			if _, err := savestate.Load(h.paths.Suspend()); err != nil {
				t.Errorf("the saved state went with the standby: %v", err)
			}
		})
	}
}

// endedVM is a VM's end for awaitWake: done when ended.
type endedVM struct{ done chan struct{} }

func (v endedVM) Done() <-chan struct{} { return v.done }
func (v endedVM) Err() error            { return errors.New("qemu was killed") }

// A wake that comes with a stop, or with the VM's end, loses to them:
// the state is never retired for a guest that will not run.
func TestAWakeLosesToAStopOrTheVMsEnd(t *testing.T) {
	d := &Daemon{log: slog.New(slog.DiscardHandler), cfg: &instance.Config{}, wake: make(chan struct{})}
	close(d.wake)
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	ended := endedVM{done: make(chan struct{})}
	close(ended.done)
	running := endedVM{done: make(chan struct{})}
	for range 100 {
		if err := d.awaitWake(stopped, running); err == nil {
			t.Fatal("a wake won over a stop")
		}
		if err := d.awaitWake(context.Background(), ended); err == nil {
			t.Fatal("a wake won over the VM's end")
		}
	}
	if err := d.awaitWake(context.Background(), running); err != nil {
		t.Errorf("a wake alone: %v", err)
	}
}
