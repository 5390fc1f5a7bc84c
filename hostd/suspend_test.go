package hostd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/snapshot"
)

// newSuspendTest is a hostdTest whose instance has a disk file: a saved
// state is stamped with it.
func newSuspendTest(t *testing.T) *hostdTest {
	t.Helper()
	h := newHostdTest(t, machinetest.Guest{})
	if err := os.WriteFile(h.cfg.DiskPath(h.paths), []byte("a disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// suspend is `cowork suspend`.
func (r *hostdRun) suspend(force bool) (*controlwire.Suspended, error) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	return r.api.Suspend(ctx, controlwire.SuspendRequest{Force: force})
}

// suspended boots the instance, suspends it and waits for hostd's exit;
// it returns the machine that was saved.
func (h *hostdTest) suspended(t *testing.T) *machinetest.Machine {
	t.Helper()
	r, m := h.ready(t)
	sus, err := r.suspend(false)
	if err != nil {
		t.Fatalf("suspend: %v\nhostd's log:\n%s", err, h.log.String())
	}
	if sus.Bytes < 0 || sus.TookMS < 0 {
		t.Errorf("suspended %+v", sus)
	}
	evs := r.all()
	if err := r.wait(); err != nil {
		t.Fatalf("hostd after a suspend: %v", err)
	}
	last := evs[len(evs)-1]
	if last.Phase != controlwire.PhaseSuspended || evs[len(evs)-2].Phase != controlwire.PhaseSuspending {
		t.Errorf("events %v, want them to end suspending, suspended", phases(evs))
	}
	if st := m.Stats(); st.End != machinetest.PowerCut || st.PowerOffs != 0 {
		t.Errorf("the saved VM ended %+v, want its power cut once saved, the guest never shut down", st)
	}
	if d, _ := m.Shares(); d != 1 {
		t.Errorf("the share was unplugged %d times, want once", d)
	}
	if e := m.Ejects(); e != 1 {
		t.Errorf("the guest's agent handed the share back %d times, want once (hostd asks it first)", e)
	}
	checkGone(t, h.paths)
	return m
}

// A resumed guest's clock, behind by the time it slept, is set while its
// share is mounted again, and the instance is ready only once it is set.
func TestResumeIsReadyOnceTheClockIsSet(t *testing.T) {
	h := newSuspendTest(t)
	h.suspended(t)
	h.host.SetGuest(machinetest.Guest{ClockDelay: 300 * time.Millisecond})
	r := h.start(t)
	m := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if st := m.Stats(); st.ClockSets == 0 {
		t.Error("ready before the resumed guest's clock was set")
	}
	if !m.ShareMounted() {
		t.Error("ready before the share was mounted")
	}
}

// A suspended guest is resumed by the next start: the same guest (its
// generation), the state retired before it runs, the share plugged back.
func TestSuspendAndResume(t *testing.T) {
	h := newSuspendTest(t)
	m1 := h.suspended(t)
	m, err := savestate.Load(h.paths.Suspend())
	if err != nil {
		t.Fatalf("the saved state's manifest: %v", err)
	}
	if m.Backend != "machinetest" || m.VM.CPUs != h.cfg.CPUs || m.Disk.Size != int64(len("a disk")) || len(m.Files) != 2 {
		t.Errorf("manifest %+v", m)
	}

	r := h.start(t)
	m2 := h.host.Next(t)
	evs := r.until(controlwire.PhaseReady)
	if !m2.Resumed() || m2.Generation() != m1.Generation() {
		t.Fatalf("the second run: resumed %v, generation %d; the saved guest was generation %d", m2.Resumed(), m2.Generation(), m1.Generation())
	}
	if !strings.Contains(evs[0].Message, "resumed") {
		t.Errorf("first event %q, want it to say the VM resumed", evs[0].Message)
	}
	for _, ev := range evs {
		if ev.Phase == controlwire.PhaseNote {
			t.Errorf("a note on a clean resume: %s: %s", ev.Message, ev.Error)
		}
	}
	if _, a := m2.Shares(); a != 1 || !m2.ShareMounted() {
		t.Errorf("the share was plugged in %d times after the resume (mounted: %v), want once, and mounted", a, m2.ShareMounted())
	}
	if _, err := os.Lstat(h.paths.Suspend()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the saved state is still there to resume again: %v", err)
	}
	if st := r.status(); !st.Ready || st.State != string(machine.Running) {
		t.Errorf("status after the resume: %+v", st)
	}
	if st := m2.Stats(); st.ClockSets == 0 {
		t.Error("the resumed guest's clock was not set")
	}
	if p := m2.Personalized(); len(p) != 0 {
		t.Errorf("the instance's own guest was personalized on resume: %q", p)
	}
	// And the next start, with no saved state, boots cold.
	r.stop(&controlwire.StopRequest{Force: true})
	r.wait()
	r = h.start(t)
	m3 := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if m3.Resumed() || m3.Generation() == m1.Generation() {
		t.Errorf("a start after the resumed run resumed again (generation %d)", m3.Generation())
	}
}

// A saved state that does not fit what would resume it is set aside with
// a note naming what changed, and the guest boots cold.
func TestResumeRefusedBootsCold(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		change     func(t *testing.T, h *hostdTest)
	}{
		{"other cpus", "the CPU count changed (2 → 3)", func(t *testing.T, h *hostdTest) {
			h.cfg.CPUs = 3
			if err := h.cfg.Save(h.paths.Dir()); err != nil {
				t.Fatal(err)
			}
		}},
		{"another hypervisor", "the hypervisor's version changed (1.0 → 2.0)", func(t *testing.T, h *hostdTest) {
			h.host.SetIdentity(machine.Identity{Binary: h.host.Identity().Binary, Version: "2.0", Devices: "fake devices"})
		}},
		{"another build of it", "the hypervisor's build changed", func(t *testing.T, h *hostdTest) {
			bin := h.host.Identity().Binary
			if err := os.WriteFile(bin, []byte("another build\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(time.Minute)
			os.Chtimes(bin, later, later)
		}},
		{"the host restarted", "the host (it restarted since) changed", func(t *testing.T, h *hostdTest) {
			m, err := savestate.Load(h.paths.Suspend())
			if err != nil {
				t.Fatal(err)
			}
			m.HostBootID = "00000000-1111-2222-3333-444444444444" // the boot before
			if err := savestate.Write(h.paths.Suspend(), m); err != nil {
				t.Fatal(err)
			}
		}},
		{"the disk written", "the disk was written since the save", func(t *testing.T, h *hostdTest) {
			if err := os.WriteFile(h.cfg.DiskPath(h.paths), []byte("a disk, changed"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"a file missing", "its file ram is missing", func(t *testing.T, h *hostdTest) {
			os.Remove(filepath.Join(h.paths.Suspend(), machine.RAMFile))
		}},
		{"a symlinked file", "its file ram is not a regular file", func(t *testing.T, h *hostdTest) {
			ram := filepath.Join(h.paths.Suspend(), machine.RAMFile)
			os.Remove(ram)
			os.Symlink("/etc/passwd", ram)
		}},
		{"a forged manifest", "its manifest is not valid JSON", func(t *testing.T, h *hostdTest) {
			os.WriteFile(filepath.Join(h.paths.Suspend(), savestate.ManifestName), []byte("{"), 0o600)
		}},
		{"a state that does not load", "it did not load (the device state is corrupt)", func(t *testing.T, h *hostdTest) {
			h.host.SetSaveFault(machinetest.SaveFault{Restore: errors.New("the device state is corrupt")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSuspendTest(t)
			m1 := h.suspended(t)
			tc.change(t, h)
			r := h.start(t)
			m2 := h.host.Next(t)
			if strings.Contains(tc.want, "did not load") {
				m2 = h.host.Next(t) // the one that failed to load, then the cold one
			}
			evs := r.until(controlwire.PhaseReady)
			var note *controlwire.Event
			for _, ev := range evs {
				if ev.Phase == controlwire.PhaseNote {
					note = ev
				}
			}
			if note == nil || !strings.Contains(note.Error, tc.want) || !strings.Contains(note.Error, "cold-boots") {
				t.Errorf("events %v, note %+v; want one saying %q", phases(evs), note, tc.want)
			}
			if m2.Resumed() || m2.Generation() == m1.Generation() {
				t.Errorf("the guest was resumed (generation %d)", m2.Generation())
			}
			if _, err := os.Lstat(h.paths.Suspend()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused state is still in the way: %v", err)
			}
			if _, err := os.Lstat(h.paths.SuspendRejected()); err != nil {
				t.Errorf("the refused state was not kept for a look: %v", err)
			}
		})
	}
}

// A suspend cut short (hostd killed before the manifest) leaves a folder
// with no manifest: the next start boots cold and clears it.
func TestSuspendCutShortBootsCold(t *testing.T) {
	h := newSuspendTest(t)
	dir := h.paths.Suspend()
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, machine.DeviceStateFile), []byte("generation 1\n"), 0o600)
	r := h.start(t)
	m := h.host.Next(t)
	evs := r.until(controlwire.PhaseReady)
	if m.Resumed() {
		t.Error("a state with no manifest was resumed")
	}
	for _, ev := range evs {
		if ev.Phase == controlwire.PhaseNote {
			t.Errorf("a note for a suspend cut short: %+v", ev)
		}
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cut-short state is left: %v", err)
	}
}

// A suspend that fails leaves the guest running as it was, its share
// plugged back in, and nothing in the suspend folder.
func TestSuspendThatFailsLeavesTheGuestRunning(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault machinetest.SaveFault
		plugs int // AttachShare calls: it plugs back what went (nothing, when nothing did)
	}{
		{"the save fails", machinetest.SaveFault{Save: syscall.ENOSPC}, 1},
		{"the unplug fails", machinetest.SaveFault{Detach: errors.New("the guest did not let the device go")}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSuspendTest(t)
			h.host.SetSaveFault(tc.fault)
			r, m := h.ready(t)
			_, err := r.suspend(false)
			if err == nil || !strings.Contains(err.Error(), "runs on as before") {
				t.Fatalf("suspend: %v, want an error saying the guest runs on", err)
			}
			if st := r.status(); st.State != string(machine.Running) || !st.Ready {
				t.Errorf("status after the failed suspend: %s ready %v", st.State, st.Ready)
			}
			if _, a := m.Shares(); a != tc.plugs || !m.ShareMounted() {
				t.Errorf("the share was plugged back %d times (mounted: %v), want %d, and mounted", a, m.ShareMounted(), tc.plugs)
			}
			if _, err := os.Lstat(h.paths.Suspend()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed suspend left %s: %v", h.paths.Suspend(), err)
			}
			// It can still be stopped, and suspended once the fault is gone.
			r.stop(&controlwire.StopRequest{Force: true})
			if err := r.wait(); err != nil {
				t.Errorf("hostd: %v", err)
			}
		})
	}
}

// A suspend is refused, nothing changed, before the instance is ready.
func TestSuspendBeforeReadyIsRefused(t *testing.T) {
	gate := make(chan struct{})
	h := newHostdTest(t, machinetest.Guest{StartGate: gate})
	r := h.start(t)
	h.host.Next(t)
	_, err := r.suspend(false)
	if !errors.Is(err, controlwire.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("suspend while booting: %v", err)
	}
	close(gate)
	r.until(controlwire.PhaseReady)
}

// A suspend is refused while guest processes use the share, naming them,
// with nothing changed; --force unmounts it under them and suspends.
func TestSuspendWithTheShareInUse(t *testing.T) {
	h := newSuspendTest(t)
	r, m := h.ready(t)
	m.UseShare(t, 812, "bash")
	m.UseShare(t, 901, "claude\x1b[2J") // a guest's name, printed safely
	_, err := r.suspend(false)
	if !errors.Is(err, controlwire.ErrFailedPrecondition) || !strings.Contains(err.Error(), "2 guest processes use /workspace (bash 812, claude") ||
		!strings.Contains(err.Error(), "--force") || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("suspend with the share in use: %v", err)
	}
	if d, _ := m.Shares(); d != 0 || !m.ShareMounted() {
		t.Errorf("a refused suspend unplugged the share (%d) or unmounted it (%v)", d, !m.ShareMounted())
	}
	if st := r.status(); st.State != string(machine.Running) || !st.Ready {
		t.Errorf("status after a refused suspend: %s", st.State)
	}
	if _, err := r.suspend(true); err != nil {
		t.Fatalf("suspend --force: %v", err)
	}
	r.all()
	if _, err := savestate.Load(h.paths.Suspend()); err != nil {
		t.Errorf("suspend --force saved nothing: %v", err)
	}
}

// A refused suspend's client may ask again the moment it has its answer:
// the suspend is no longer under way then, however long the main loop
// takes to go on.
func TestASuspendRefusedMayBeAskedAgainAtOnce(t *testing.T) {
	h := newSuspendTest(t)
	r, m := h.ready(t)
	m.UseShare(t, 812, "bash")
	slow := suspendAnswered
	suspendAnswered = func() { time.Sleep(300 * time.Millisecond) }
	defer func() { suspendAnswered = slow }()
	for try := range 3 {
		if _, err := r.suspend(false); err == nil || !strings.Contains(err.Error(), "uses /workspace") {
			t.Fatalf("try %d: suspend with the share in use: %v, want it refused for the share", try, err)
		}
	}
}

// A snapshot of a suspended instance keeps its memory: the instance
// resumes from its own state (its disk now an empty overlay on the layer
// the state was saved with), and restoring the snapshot later resumes the
// guest as it was when the snapshot was taken.
func TestSnapshotOfASuspendedGuestResumes(t *testing.T) {
	h := newSuspendTest(t)
	m1 := h.suspended(t)
	if _, err := snapshot.Create(h.paths, h.cfg, "s1"); err != nil {
		t.Fatal(err)
	}
	r := h.start(t)
	m2 := h.host.Next(t)
	evs := r.until(controlwire.PhaseReady)
	if !m2.Resumed() || m2.Generation() != m1.Generation() {
		t.Fatalf("after a snapshot, the instance booted (generation %d, saved %d): %v", m2.Generation(), m1.Generation(), phases(evs))
	}
	r.stop(&controlwire.StopRequest{Force: true})
	r.wait()

	cfg, err := instance.Load(h.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Restore(h.paths, cfg, "s1", true); err != nil {
		t.Fatal(err)
	}
	r = h.start(t)
	m3 := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if !m3.Resumed() || m3.Generation() != m1.Generation() {
		t.Errorf("a restored snapshot with memory booted (generation %d), want the saved guest (%d) resumed", m3.Generation(), m1.Generation())
	}
}

// The manifest records the files the backend says it wrote (vz: one state
// file), not QEMU's two: the state resumes, and a start refuses it once
// that file is gone.
func TestSuspendRecordsTheBackendsFiles(t *testing.T) {
	vzLike := machinetest.Guest{StateFile: "vm.state"}
	t.Run("resumed", func(t *testing.T) {
		h := newSuspendTest(t)
		h.host.SetGuest(vzLike)
		m1 := h.suspended(t)
		m, err := savestate.Load(h.paths.Suspend())
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Files) != 1 || m.Files[0].Name != "vm.state" || m.Files[0].Size == 0 {
			t.Errorf("the manifest's files %+v, want vm.state alone, with its size", m.Files)
		}
		r := h.start(t)
		m2 := h.host.Next(t)
		r.until(controlwire.PhaseReady)
		if !m2.Resumed() || m2.Generation() != m1.Generation() {
			t.Errorf("resumed %v, generation %d; want the saved generation %d", m2.Resumed(), m2.Generation(), m1.Generation())
		}
	})
	t.Run("its file gone", func(t *testing.T) {
		h := newSuspendTest(t)
		h.host.SetGuest(vzLike)
		h.suspended(t)
		os.Remove(filepath.Join(h.paths.Suspend(), "vm.state"))
		r := h.start(t)
		m2 := h.host.Next(t)
		evs := r.until(controlwire.PhaseReady)
		if m2.Resumed() {
			t.Error("a state without its file was resumed")
		}
		var note string
		for _, ev := range evs {
			if ev.Phase == controlwire.PhaseNote {
				note = ev.Error
			}
		}
		if !strings.Contains(note, "its file vm.state is missing") {
			t.Errorf("note %q, want it to name the missing vm.state", note)
		}
	})
}

// Two snapshots of a suspended instance stack two empty overlays on the
// layer its state was saved with: the instance still resumes, and so
// does either snapshot, restored.
func TestTwoSnapshotsOfASuspendedGuestResume(t *testing.T) {
	h := newSuspendTest(t)
	m1 := h.suspended(t)
	for _, n := range []string{"a", "b"} {
		if s, err := snapshot.Create(h.paths, h.cfg, n); err != nil || !s.Memory {
			t.Fatalf("snapshot %s: %+v %v", n, s, err)
		}
	}
	r := h.start(t)
	m2 := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if !m2.Resumed() || m2.Generation() != m1.Generation() {
		t.Fatalf("after two snapshots the instance booted cold (generation %d, saved %d)", m2.Generation(), m1.Generation())
	}
	r.stop(&controlwire.StopRequest{Force: true})
	r.wait()
	cfg, _ := instance.Load(h.cfg.Name)
	if _, err := snapshot.Restore(h.paths, cfg, "b", true); err != nil {
		t.Fatal(err)
	}
	r = h.start(t)
	m3 := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if !m3.Resumed() || m3.Generation() != m1.Generation() {
		t.Errorf("snapshot b, restored, booted cold (generation %d)", m3.Generation())
	}
}

// A guest saved by another instance (a clone of a snapshot with memory)
// is a fork: resumed, it is given 64 fresh bytes of the host's randomness
// to reseed from, and takes a new machine-id, before it is ready. Saved
// again, it is its own: its next resume personalizes nothing.
func TestAForkMakesItselfItsOwn(t *testing.T) {
	h := newSuspendTest(t)
	h.suspended(t)
	m, err := savestate.Load(h.paths.Suspend())
	if err != nil {
		t.Fatal(err)
	}
	if want := h.cfg.Name + "/" + h.cfg.InstanceID; m.Instance != want {
		t.Fatalf("the manifest names instance %q, want %q", m.Instance, want)
	}
	m.Instance = h.cfg.Name + "/cowork-" + h.cfg.Name + "-1" // a deleted instance of the same name
	if err := savestate.Write(h.paths.Suspend(), m); err != nil {
		t.Fatal(err)
	}
	// Its share is mounted while it is personalized; ready waits for both.
	h.host.SetGuest(machinetest.Guest{PersonalizeDelay: 300 * time.Millisecond})
	r := h.start(t)
	fork := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	p := fork.Personalized()
	if !fork.Resumed() || len(p) != 3 || len(p[0]) != len("seed ")+2*64 || strings.Count(p[0], "0") > 100 ||
		!regexp.MustCompile(`^machine-id [0-9a-f]{32}$`).MatchString(p[1]) || p[2] != "hostname cowork" {
		t.Fatalf("the fork (resumed %v) was personalized: %q", fork.Resumed(), p)
	}
	if !strings.Contains(h.log.String(), "fork personalized") {
		t.Errorf("hostd's log does not say it:\n%s", h.log.String())
	}

	if _, err := r.suspend(false); err != nil {
		t.Fatal(err)
	}
	r.wait()
	h.host.SetGuest(machinetest.Guest{})
	r = h.start(t)
	again := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	if !again.Resumed() || len(again.Personalized()) != 0 {
		t.Errorf("its own saved guest, resumed (%v), was personalized: %q", again.Resumed(), again.Personalized())
	}
}
