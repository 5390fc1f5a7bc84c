package snapshot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/qcow2"
)

// A clone from a snapshot two layers deep reads as the snapshot does:
// its raw base a hard link (no copy), the layer above a copy rebased onto
// the clone's own base, its disk an overlay on that; hostd's chain check
// accepts it as the clone's own, and it lives on when the source goes.
func TestCloneDisk(t *testing.T) {
	p, cfg, _ := newInstance(t)
	if _, err := Create(p, cfg, "s1"); err != nil {
		t.Fatal(err)
	}
	write(t, cfg.DiskPath(p), []byte("written after s1"))
	if _, err := Create(p, cfg, "s2"); err != nil {
		t.Fatal(err)
	}
	want := content(t, p, cfg)
	if !bytes.HasPrefix(want, []byte("written after s1")) {
		t.Fatal("the test's write did not reach the disk")
	}

	dp := instance.Paths(filepath.Join(filepath.Dir(p.Dir()), "fork"))
	if err := os.MkdirAll(dp.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	format, err := CloneDisk(p, dp, "s2", int64(cfg.Disk))
	if err != nil {
		t.Fatal(err)
	}
	dcfg := &instance.Config{Name: "fork", Disk: cfg.Disk, DiskFormat: format}
	if got := content(t, dp, dcfg); !bytes.Equal(got, want) {
		t.Errorf("the clone reads %q..., the snapshot %q...", got[:20], want[:20])
	}
	if inode(t, LayerPath(Dir(dp, "s1"), "raw")) != inode(t, LayerPath(Dir(p, "s1"), "raw")) {
		t.Error("the raw base was copied, not linked")
	}
	if inode(t, LayerPath(Dir(dp, "s2"), "qcow2")) == inode(t, LayerPath(Dir(p, "s2"), "qcow2")) {
		t.Error("a layer on a layer was linked: its header names the source's files")
	}
	// Every name in the clone's chain is the clone's own (what hostd's
	// chain check asks; the e2e test boots one).
	for path, want := range map[string]string{
		dcfg.DiskPath(dp):                 LayerPath(Dir(dp, "s2"), "qcow2"),
		LayerPath(Dir(dp, "s2"), "qcow2"): LayerPath(Dir(dp, "s1"), "raw"),
	} {
		info, err := qcow2.ReadInfo(path)
		if err != nil || info.Backing != want {
			t.Errorf("%s sits on %+v (%v), want %s", path, info, err, want)
		}
	}
	all, err := List(dp, dcfg)
	if err != nil || len(all) != 2 || all[1].Name != "s2" || !all[1].Current || all[1].Memory {
		t.Errorf("the clone's snapshots: %+v %v", all, err)
	}

	os.Chmod(p.Dir(), 0o700)
	if err := os.RemoveAll(p.Dir()); err != nil {
		t.Fatal(err)
	}
	if got := content(t, dp, dcfg); !bytes.Equal(got, want) {
		t.Error("the clone changed when its source was deleted")
	}
}

// A snapshot that is not there, or a name that is no name, clones nothing.
func TestCloneDiskRefuses(t *testing.T) {
	p, _, _ := newInstance(t)
	dp := instance.Paths(filepath.Join(t.TempDir(), "fork"))
	for _, name := range []string{"none", "../box", ""} {
		if _, err := CloneDisk(p, dp, name, 1<<20); err == nil {
			t.Errorf("clone of snapshot %q: no error", name)
		}
	}
	if _, err := os.Stat(dp.DiskFor(instance.DiskQcow2)); !os.IsNotExist(err) {
		t.Errorf("a refused clone made a disk: %v", err)
	}
}

// A snapshot with memory gives its clone the saved guest: links to its
// files, under a manifest of the clone's own that names the clone's
// layer, the same file (a raw base, linked) or a copy of it (a layer on a
// layer), with its stamp. The source's manifest stays as it was.
func TestCloneDiskWithMemory(t *testing.T) {
	p, cfg, _ := newInstance(t)
	saveState(t, p, cfg)
	if _, err := Create(p, cfg, "m1"); err != nil { // the raw base, with memory
		t.Fatal(err)
	}
	os.RemoveAll(p.Suspend()) // resumed, then suspended again on m1's overlay
	saveState(t, p, cfg)
	if _, err := Create(p, cfg, "m2"); err != nil { // a layer on m1, with memory
		t.Fatal(err)
	}
	for i, snap := range []string{"m1", "m2"} {
		src, err := Load(p, snap)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(filepath.Join(src.MemoryDir(), savestate.ManifestName))
		dp := instance.Paths(filepath.Join(filepath.Dir(p.Dir()), "fork"+snap))
		if err := os.MkdirAll(dp.Dir(), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := CloneDisk(p, dp, snap, int64(cfg.Disk)); err != nil {
			t.Fatal(err)
		}
		m, err := savestate.Load(dp.Suspend())
		if err != nil {
			t.Fatalf("%s: the clone has no saved guest: %v", snap, err)
		}
		layer := LayerPath(Dir(dp, snap), src.Format)
		if st, err := savestate.Stamp(layer); err != nil || m.Disk != st || m.VM.Disk != layer {
			t.Errorf("%s: the clone's state names %s %+v, its layer is %s %+v", snap, m.VM.Disk, m.Disk, layer, st)
		}
		if err := m.CheckFiles(dp.Suspend()); err != nil {
			t.Errorf("%s: %v", snap, err)
		}
		if inode(t, filepath.Join(dp.Suspend(), "ram")) != inode(t, filepath.Join(src.MemoryDir(), "ram")) {
			t.Errorf("%s: the memory was copied, not linked", snap)
		}
		if inode(t, filepath.Join(dp.Suspend(), savestate.ManifestName)) == inode(t, filepath.Join(src.MemoryDir(), savestate.ManifestName)) {
			t.Errorf("%s: the clone's manifest is the source's", snap)
		}
		if linked := inode(t, layer) == inode(t, src.Layer()); linked != (i == 0) {
			t.Errorf("%s: the layer is linked: %v", snap, linked)
		}
		if after, _ := os.ReadFile(filepath.Join(src.MemoryDir(), savestate.ManifestName)); !bytes.Equal(before, after) {
			t.Errorf("%s: the source's manifest changed", snap)
		}
	}
}

// A snapshot whose saved guest was not saved with its layer (a manifest
// that says another disk, as a snapshot removed and taken again under a
// clone would leave) gives the clone no saved guest: it boots cold
// rather than resume on a disk that is not its own.
func TestCloneDiskRefusesAGuestOfAnotherDisk(t *testing.T) {
	p, cfg, _ := newInstance(t)
	saveState(t, p, cfg)
	s, err := Create(p, cfg, "m1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := savestate.Load(s.MemoryDir())
	if err != nil {
		t.Fatal(err)
	}
	m.Disk.Ino++
	os.Remove(filepath.Join(s.MemoryDir(), savestate.ManifestName)) // a link to the instance's own
	if err := savestate.Write(s.MemoryDir(), m); err != nil {
		t.Fatal(err)
	}
	dp := instance.Paths(filepath.Join(filepath.Dir(p.Dir()), "fork"))
	if err := os.MkdirAll(dp.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := CloneDisk(p, dp, "m1", int64(cfg.Disk)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dp.Suspend()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clone got a saved guest of another disk: %v", err)
	}
}
