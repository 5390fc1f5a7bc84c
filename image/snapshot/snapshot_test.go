package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/qcow2"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A snapshot of a raw disk moves the disk itself into the snapshot (same
// inode, read-only) and the instance goes on from an empty overlay on it
// that reads the same; a second snapshot layers on the first.
func TestCreateLayers(t *testing.T) {
	p, cfg, data := newInstance(t)
	ino := inode(t, p.Disk())
	s1, err := Create(p, cfg, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if s1.Format != "raw" || s1.Size != diskSize || s1.Parent != "" || s1.Created.IsZero() {
		t.Errorf("s1 = %+v", s1.Meta)
	}
	layer := filepath.Join(p.Dir(), "snapshots", "s1", "disk.raw")
	if inode(t, layer) != ino {
		t.Error("the disk was copied, not moved, into the snapshot")
	}
	if st, _ := os.Stat(layer); st.Mode().Perm() != 0o444 {
		t.Errorf("layer mode %v, want 0444", st.Mode().Perm())
	}
	if _, err := os.Lstat(p.Disk()); !errors.Is(err, os.ErrNotExist) {
		t.Error("disk.raw is still in the instance's folder")
	}
	if exists(p.SnapshotIntent()) {
		t.Error("the intent is left")
	}
	cfg = loadCfg(t, p)
	if cfg.Format() != instance.DiskQcow2 {
		t.Fatalf("config's disk format %q after a snapshot", cfg.Format())
	}
	info, err := qcow2.ReadInfo(p.DiskFor(instance.DiskQcow2))
	if err != nil || info.Backing != layer || info.BackingFormat != "raw" || info.Size != diskSize {
		t.Fatalf("the new overlay: %+v, %v", info, err)
	}
	wantContent(t, content(t, p, cfg), data, "after s1")

	// The guest writes; a second snapshot keeps it, on s1.
	write(t, p.DiskFor(instance.DiskQcow2), []byte("written after s1"))
	after := append([]byte("written after s1"), data[16:]...)
	wantContent(t, content(t, p, cfg), after, "after a write")
	s2, err := Create(p, cfg, "s2")
	if err != nil {
		t.Fatal(err)
	}
	if s2.Format != "qcow2" || s2.Parent != "s1" {
		t.Errorf("s2 = %+v", s2.Meta)
	}
	info, err = qcow2.ReadInfo(p.DiskFor(instance.DiskQcow2))
	if err != nil || info.Backing != s2.Layer() || info.BackingFormat != "qcow2" {
		t.Fatalf("the overlay on s2: %+v, %v", info, err)
	}
	wantContent(t, content(t, p, cfg), after, "after s2")

	list, err := List(p, cfg)
	if err != nil || len(list) != 2 || list[0].Name != "s1" || list[1].Name != "s2" || list[0].Current || !list[1].Current {
		t.Fatalf("List = %v, %v", list, err)
	}
	if list[0].Allocated <= 0 || list[1].Allocated <= 0 {
		t.Errorf("sizes on disk %d, %d", list[0].Allocated, list[1].Allocated)
	}
	if _, err := Create(p, cfg, "s1"); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("a second s1: %v", err)
	}
}

func TestNames(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a..b", "-a", ".a", "A", "a/b", "a b", strings.Repeat("a", 64), "rm-ok\n"} {
		if ValidName(bad) == nil {
			t.Errorf("%q is a valid name", bad)
		}
	}
	for _, good := range []string{"a", "s1", "before-upgrade", "v1.2_3", strings.Repeat("a", 63)} {
		if err := ValidName(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	p, cfg, _ := newInstance(t)
	for _, f := range []func() error{
		func() error { _, err := Create(p, cfg, "../x"); return err },
		func() error { _, err := Restore(p, cfg, "../x", true); return err },
		func() error { return Remove(p, cfg, "../x") },
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "snapshot name") {
			t.Errorf("a bad name: %v", err)
		}
	}
}

// Restore replaces the overlay; one that holds data needs force, and the
// refusal says how much.
func TestRestore(t *testing.T) {
	p, cfg, data := newInstance(t)
	if _, err := Restore(p, cfg, "s1", true); err == nil || !strings.Contains(err.Error(), "no snapshot s1") {
		t.Errorf("restore of a missing snapshot: %v", err)
	}
	if _, err := Create(p, cfg, "s1"); err != nil {
		t.Fatal(err)
	}
	overlay := p.DiskFor(instance.DiskQcow2)
	if _, err := Restore(p, cfg, "s1", false); err != nil {
		t.Fatalf("restore over an empty overlay: %v", err)
	}
	write(t, overlay, []byte("changed"))
	_, err := Restore(p, cfg, "s1", false)
	var dirty *DirtyError
	if !errors.As(err, &dirty) || dirty.Written != 1<<16 || !strings.Contains(err.Error(), "64 KiB") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over a written overlay = %v, want a DirtyError of 64 KiB naming --force", err)
	}
	if !strings.HasPrefix(string(content(t, p, cfg)), "changed") {
		t.Fatal("a refused restore changed the disk")
	}
	if _, err := Restore(p, cfg, "s1", true); err != nil {
		t.Fatal(err)
	}
	wantContent(t, content(t, p, cfg), data, "after restore --force")
	if n, err := qcow2.Written(overlay); n != 0 || err != nil {
		t.Errorf("the restored overlay holds %d (%v)", n, err)
	}
	if exists(overlay + ".restore") {
		t.Error("the restore's temporary overlay is left")
	}

	// Back to a later snapshot, then to an earlier one.
	write(t, overlay, []byte("second"))
	if _, err := Create(p, cfg, "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(p, cfg, "s1", false); err != nil {
		t.Fatal(err)
	}
	wantContent(t, content(t, p, cfg), data, "back at s1")
	if On(p, cfg) != "s1" {
		t.Errorf("On = %q after restoring s1", On(p, cfg))
	}
	if _, err := Restore(p, cfg, "s2", false); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(content(t, p, cfg)), "second") {
		t.Error("restoring s2 does not give s2's disk")
	}
}

// A disk that sits on no snapshot is never replaced: it may be the only
// copy of what it holds.
func TestRestoreRefusesADiskOnNoSnapshot(t *testing.T) {
	p, cfg, data := newInstance(t)
	if _, err := Create(p, cfg, "s1"); err != nil {
		t.Fatal(err)
	}
	// The instance goes back to a raw disk of its own.
	os.WriteFile(p.Disk(), data, 0o600)
	cfg.DiskFormat = instance.DiskRaw
	if _, err := Restore(p, cfg, "s1", true); err == nil || !strings.Contains(err.Error(), "not an overlay on one of its snapshots") {
		t.Errorf("restore over a raw disk: %v", err)
	}
}

// Remove refuses a snapshot the disk or another layer sits on, naming
// them, and removes one nothing needs.
func TestRemove(t *testing.T) {
	p, cfg, _ := newInstance(t)
	for _, n := range []string{"s1", "s2"} {
		if _, err := Create(p, cfg, n); err != nil {
			t.Fatal(err)
		}
	}
	var inUse *InUseError
	if err := Remove(p, cfg, "s1"); !errors.As(err, &inUse) || strings.Join(inUse.Users, ",") != "snapshot s2" {
		t.Errorf("rm s1 = %v, want in use by s2", err)
	}
	if err := Remove(p, cfg, "s2"); !errors.As(err, &inUse) || strings.Join(inUse.Users, ",") != "the disk of box" {
		t.Errorf("rm s2 = %v, want in use by the disk", err)
	}
	if _, err := Restore(p, cfg, "s1", true); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p, cfg, "s1"); !errors.As(err, &inUse) || !strings.Contains(err.Error(), "the disk of box, snapshot s2") {
		t.Errorf("rm s1 = %v, want in use by the disk and s2", err)
	}
	if err := Remove(p, cfg, "s2"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(p.Snapshots()); len(entries) != 1 || entries[0].Name() != "s1" {
		t.Errorf("left in snapshots/: %v", entries)
	}
	if err := Remove(p, cfg, "s2"); err == nil || !strings.Contains(err.Error(), "no snapshot s2") {
		t.Errorf("rm of a removed snapshot: %v", err)
	}
	// A removal cut short leaves a folder the next one clears.
	os.MkdirAll(filepath.Join(p.Snapshots(), ".rm-old"), 0o700)
	if _, err := Create(p, cfg, "s3"); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(p, cfg, "s1", true); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p, cfg, "s3"); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(p.Snapshots(), ".rm-old")) {
		t.Error("a removal's leftover was not cleared")
	}
}

// A running instance, one whose saved state cannot be read, or one with
// a capture to finish, is refused, its disk untouched.
func TestRefusals(t *testing.T) {
	p, cfg, data := newInstance(t)
	l, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(p, cfg, "s1"); err == nil || !strings.Contains(err.Error(), "box is running") {
		t.Errorf("create while running: %v", err)
	}
	l.Release()
	os.Mkdir(p.Suspend(), 0o700)
	_, err = Create(p, cfg, "s1")
	if err == nil || !strings.Contains(err.Error(), "saved memory cannot be kept") || !strings.Contains(err.Error(), "cowork start --cold") {
		t.Errorf("create while suspended, the state cut short: %v", err)
	}
	os.Remove(p.Suspend())
	os.WriteFile(p.Capture(), []byte("{}"), 0o600)
	if _, err := Create(p, cfg, "s1"); err == nil || !strings.Contains(err.Error(), "capture") {
		t.Errorf("create with a capture to finish: %v", err)
	}
	os.Remove(p.Capture())
	wantContent(t, content(t, p, cfg), data, "after refusals")
	if exists(p.Snapshots()) {
		t.Error("a refused create made the snapshots folder")
	}
}

// saveState stands for `cowork suspend`: a saved guest in the instance's
// suspend folder, whose manifest records the disk it was saved with.
func saveState(t *testing.T, p instance.Paths, cfg *instance.Config) {
	t.Helper()
	if err := os.MkdirAll(p.Suspend(), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"device.state": "devices", "ram": "memory"} {
		if err := os.WriteFile(filepath.Join(p.Suspend(), name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stamp, err := savestate.Stamp(cfg.DiskPath(p))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := savestate.Sizes(p.Suspend(), "device.state", "ram")
	m := &savestate.Manifest{VM: savestate.VM{Disk: cfg.DiskPath(p), DiskFormat: cfg.Format()}, Disk: stamp, Files: files}
	if err := savestate.Write(p.Suspend(), m); err != nil {
		t.Fatal(err)
	}
}

// A snapshot of a suspended instance keeps its saved guest (links to the
// same files) and the layer it was saved with; the instance keeps its own
// state. Restoring the snapshot, which a suspended instance refuses
// without --force, makes that guest the instance's saved state again.
func TestSnapshotWithMemory(t *testing.T) {
	p, cfg, data := newInstance(t)
	saveState(t, p, cfg)
	saved, _ := savestate.Load(p.Suspend())
	s1, err := Create(p, cfg, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !s1.Memory {
		t.Fatal("a snapshot of a suspended instance has no memory")
	}
	for _, n := range []string{"device.state", "ram", savestate.ManifestName} {
		a, err1 := os.Stat(filepath.Join(p.Suspend(), n))
		b, err2 := os.Stat(filepath.Join(s1.MemoryDir(), n))
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			t.Errorf("%s: the snapshot's copy is not the instance's file (%v, %v)", n, err1, err2)
		}
	}
	if st, err := savestate.Stamp(s1.Layer()); err != nil || st != saved.Disk {
		t.Errorf("the layer's stamp %+v (%v), the state was saved with %+v", st, err, saved.Disk)
	}
	wantContent(t, content(t, p, cfg), data, "after a snapshot with memory")

	if _, err := Restore(p, cfg, "s1", false); err == nil || !strings.Contains(err.Error(), "suspended") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("restore over a suspended instance: %v", err)
	}
	os.RemoveAll(p.Suspend()) // it resumed, ran, and stopped
	if _, err := Restore(p, cfg, "s1", true); err != nil {
		t.Fatal(err)
	}
	m, err := savestate.Load(p.Suspend())
	if err != nil || m.Disk != saved.Disk || m.VM.Disk != saved.VM.Disk {
		t.Fatalf("the restored saved state: %+v %v", m, err)
	}
	if err := m.CheckFiles(p.Suspend()); err != nil {
		t.Errorf("the restored state's files: %v", err)
	}
	if _, err := os.Stat(s1.MemoryDir()); err != nil {
		t.Errorf("the restore took the snapshot's memory away: %v", err)
	}
	wantContent(t, content(t, p, cfg), data, "after restoring a snapshot with memory")
}

// A create with memory cut short after the disk moved finishes even when
// the instance's own saved guest is gone by then (start --cold discarded
// it): the snapshot linked the guest in before the disk moved.
func TestCutCreateWithMemoryFinishesWithoutTheSuspendFolder(t *testing.T) {
	p, cfg, data := newInstance(t)
	saveState(t, p, cfg)
	cut = func(step string) bool { return step == "rename" }
	_, err := Create(p, cfg, "s1")
	cut = func(string) bool { return false }
	if err != errCut {
		t.Fatalf("create: %v, want it cut", err)
	}
	if err := os.RemoveAll(p.Suspend()); err != nil {
		t.Fatal(err)
	}
	if _, err := Recover(p, cfg); err != nil {
		t.Fatalf("recover: %v", err)
	}
	s, err := Load(p, "s1")
	if err != nil || !s.Memory {
		t.Fatalf("the snapshot: %+v %v", s, err)
	}
	if _, err := savestate.Load(s.MemoryDir()); err != nil {
		t.Errorf("its memory: %v", err)
	}
	wantContent(t, content(t, p, loadCfg(t, p)), data, "after the finished create")
}
