package hostd

import (
	"errors"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
)

// withMounts gives the test's instance two mounts besides the workspace:
// /data read-only, /src read-write.
func withMounts(t *testing.T, h *hostdTest) (data, src string) {
	t.Helper()
	data, src = t.TempDir(), t.TempDir()
	h.cfg.Mounts = []instance.Mount{{Host: data, Guest: "/data", ReadOnly: true}, {Host: src, Guest: "/src"}}
	if err := h.cfg.Save(h.paths.Dir()); err != nil {
		t.Fatal(err)
	}
	return data, src
}

// checkMounted fails unless the guest has the workspace and both mounts
// mounted, each by its own tag, /data read-only.
func checkMounted(t *testing.T, m *machinetest.Machine, when string) {
	t.Helper()
	got := m.Mounted()
	want := map[string]machinetest.GuestMount{
		"/workspace": {Tag: "workspace"},
		"/data":      {Tag: "mount1", ReadOnly: true},
		"/src":       {Tag: "mount2"},
	}
	for dir, w := range want {
		if g, ok := got[dir]; !ok || g != w {
			t.Errorf("%s: the guest has %+v at %s (mounted %v), want %+v", when, g, dir, ok, w)
		}
	}
}

// The VM gets every share (the workspace first, a read-only one served
// read-only); the guest mounts the others once its agent answers, before
// ready, and again after a resume.
func TestMountsBesidesTheWorkspace(t *testing.T) {
	h := newSuspendTest(t)
	data, src := withMounts(t, h)
	r, m := h.ready(t)
	want := []machine.Share{{Dir: h.cfg.Workspace, Tag: "workspace"}, {Dir: data, Tag: "mount1", ReadOnly: true}, {Dir: src, Tag: "mount2"}}
	if got := m.Config.Shares; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("the VM's shares: %+v, want %+v", got, want)
	}
	checkMounted(t, m, "at ready")

	if _, err := r.suspend(false); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	r.all()
	if err := r.wait(); err != nil {
		t.Fatalf("hostd after a suspend: %v", err)
	}
	if got := m.Mounted(); len(got) != 0 {
		t.Errorf("the guest was saved with %v still mounted", got)
	}
	r = h.start(t)
	m2 := h.host.Next(t)
	evs := r.until(controlwire.PhaseReady)
	if !m2.Resumed() {
		t.Fatal("the suspended guest was not resumed")
	}
	for _, ev := range evs {
		if ev.Phase == controlwire.PhaseNote {
			t.Errorf("a note on a clean resume: %s: %s", ev.Message, ev.Error)
		}
	}
	checkMounted(t, m2, "after the resume")
}

// A process in another mount keeps a suspend from happening as one in
// the workspace does: the suspend names it, and what was released
// already (the workspace) is mounted again.
func TestSuspendWithAMountInUse(t *testing.T) {
	h := newSuspendTest(t)
	withMounts(t, h)
	r, m := h.ready(t)
	m.UseFolder(t, 77, "make", "/src/build")
	_, err := r.suspend(false)
	if !errors.Is(err, controlwire.ErrFailedPrecondition) || !strings.Contains(err.Error(), "1 guest process uses /src (make 77)") {
		t.Fatalf("suspend with /src in use: %v", err)
	}
	checkMounted(t, m, "after the refused suspend")
	if d, _ := m.Shares(); d != 0 {
		t.Errorf("a refused suspend unplugged the shares %d times", d)
	}
}

// A mount whose folder is gone stops the start with an error naming it
// and the way out; nothing boots.
func TestStartRefusesAMissingMount(t *testing.T) {
	h := newSuspendTest(t)
	h.cfg.Mounts = []instance.Mount{{Host: t.TempDir() + "/gone", Guest: "/data"}}
	if err := h.cfg.Save(h.paths.Dir()); err != nil {
		t.Fatal(err)
	}
	r := h.start(t)
	err := r.wait()
	if err == nil || !strings.Contains(err.Error(), "/gone: no such folder") || !strings.Contains(err.Error(), "--mount") {
		t.Fatalf("start with a missing mount: %v", err)
	}
}
