package hostd

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/machine"
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
	h.opts.Standby = true
	r := h.start(t)
	m2 := h.host.Next(t)
	if st := r.standingBy(); st.Ready {
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
	h.opts.Standby = true
	r := h.start(t)
	m2 := h.host.Next(t)
	r.standingBy()
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

// A resumed guest runs one exec of hostd's own beside its resume, so that
// the first command a user runs finds the exec path translated; a booted
// one does not need it.
func TestAResumedGuestsExecPathIsWarmed(t *testing.T) {
	h := newSuspendTest(t)
	h.suspended(t)
	if strings.Contains(h.log.String(), "warmed the guest's exec path") {
		t.Fatal("a booted guest's exec path was warmed")
	}
	r := h.start(t)
	h.host.Next(t)
	r.until(controlwire.PhaseReady)
	deadline := time.Now().Add(patience)
	for !strings.Contains(h.log.String(), "warmed the guest's exec path") {
		if time.Now().After(deadline) {
			t.Fatalf("no exec warmed the resumed guest; hostd's log:\n%s", h.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
