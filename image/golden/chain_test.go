package golden

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/snapshot"
)

// snapped makes the instance name in s.Home on golden disk g (an overlay)
// with snapshots s1 and s2: its disk → s2 → s1 → g.
func snapped(t *testing.T, s Store, g *Golden, name string) (instance.Paths, *instance.Config) {
	t.Helper()
	p, cfg, _ := newInstance(t, s, name)
	os.Remove(p.Disk())
	if _, err := s.Clone(g, p, diskSize); err != nil {
		t.Fatal(err)
	}
	cfg.DiskFormat, cfg.Golden = instance.DiskQcow2, g.Key
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"s1", "s2"} {
		if _, err := snapshot.Create(p, cfg, n); err != nil {
			t.Fatal(err)
		}
	}
	return p, cfg
}

// layer writes a crafted overlay as the layer of snapshot name of p.
func layer(t *testing.T, p instance.Paths, name, backing, format string) string {
	t.Helper()
	dir := filepath.Join(p.Snapshots(), name)
	os.MkdirAll(dir, 0o700)
	path := filepath.Join(dir, "disk.qcow2")
	craftOverlay(t, path, backing, format)
	return path
}

// An instance's disk may sit on its own snapshots, down to a golden disk
// or a raw first disk; every other chain is refused before QEMU sees it.
func TestCheckOverlayChains(t *testing.T) {
	noReflinks(t)
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	p, _ := snapped(t, s, g, "box")
	top := p.DiskFor(instance.DiskQcow2)
	if err := s.CheckOverlay(top); err != nil {
		t.Fatalf("disk → s2 → s1 → golden: %v", err)
	}
	// A raw first disk, snapshotted.
	o, ocfg, _ := newInstance(t, s, "other")
	if _, err := snapshot.Create(o, ocfg, "o1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckOverlay(o.DiskFor(instance.DiskQcow2)); err != nil {
		t.Fatalf("disk → raw snapshot: %v", err)
	}

	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "disk.raw")
	os.WriteFile(secret, []byte("id_ed25519"), 0o600)
	snaps := p.Snapshots()
	s1 := filepath.Join(snaps, "s1", "disk.qcow2")
	// Snapshot folders and layers that lead out.
	os.Symlink(secretDir, filepath.Join(snaps, "linkdir"))
	os.Mkdir(filepath.Join(snaps, "linkfile"), 0o700)
	os.Symlink(secret, filepath.Join(snaps, "linkfile", "disk.raw"))
	os.Mkdir(filepath.Join(snaps, "fifo"), 0o700)
	if err := syscall.Mkfifo(filepath.Join(snaps, "fifo", "disk.raw"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(snaps, "rawq"), 0o700)
	os.WriteFile(filepath.Join(snaps, "rawq", "disk.qcow2"), make([]byte, 4096), 0o444) // raw bytes, a qcow2 name
	// A loop, a deep chain, layers that name what no layer may.
	loopA := layer(t, p, "loop-a", filepath.Join(snaps, "loop-b", "disk.qcow2"), "qcow2")
	layer(t, p, "loop-b", loopA, "qcow2")
	below := g.Disk()
	format := "raw"
	for i := MaxChain; i >= 0; i-- {
		below, format = layer(t, p, fmt.Sprintf("deep%02d", i), below, format), "qcow2"
	}
	deep := below
	hostLayer := layer(t, p, "host", secret, "raw")
	relLayer := layer(t, p, "rel", "s1/disk.qcow2", "qcow2")
	goldenQ := layer(t, p, "goldenq", g.Disk(), "qcow2")
	foreign := layer(t, p, "foreign", filepath.Join(o.Snapshots(), "o1", "disk.raw"), "raw")
	ext := layer(t, p, "ext", g.Disk(), "raw")
	b := readFile(t, ext)
	binary.BigEndian.PutUint64(b[72:], 1<<2) // incompatible feature: external data file
	os.WriteFile(ext, b, 0o444)

	for _, c := range []struct{ name, backing, format, want string }{
		{"another instance's snapshot", filepath.Join(o.Snapshots(), "o1", "disk.raw"), "raw", "not a golden disk"},
		{"a host file", secret, "raw", "not a golden disk"},
		{"dot-dot out of the snapshots", filepath.Join(snaps, "s1") + "/../../../other/snapshots/o1/disk.raw", "raw", "not a golden disk"},
		{"a symlinked snapshot folder", filepath.Join(snaps, "linkdir", "disk.raw"), "raw", "leads out of the instance's snapshots"},
		{"a symlinked layer", filepath.Join(snaps, "linkfile", "disk.raw"), "raw", "leads out of the instance's snapshots"},
		{"a fifo layer", filepath.Join(snaps, "fifo", "disk.raw"), "raw", "not a regular file"},
		{"a loop", loopA, "qcow2", "loop back"},
		{"an over-deep chain", deep, "qcow2", fmt.Sprintf("more than %d layers", MaxChain)},
		{"a relative backing path", "snapshots/s1/disk.qcow2", "qcow2", "relative path"},
		{"a layer with a relative backing path", relLayer, "qcow2", "relative path"},
		{"a layer on a host file", hostLayer, "qcow2", "not a golden disk"},
		{"a layer on another instance's snapshot", foreign, "qcow2", "not a golden disk"},
		{"a layer on a golden disk read as qcow2", goldenQ, "qcow2", "not raw"},
		{"a layer with an external data file", ext, "qcow2", "keeps its data in another file"},
		{"a qcow2 layer recorded as raw", s1, "raw", `records format "raw"`},
		{"another instance's raw layer recorded as qcow2", filepath.Join(o.Snapshots(), "o1", "disk.raw"), "qcow2", "not raw"},
		{"a raw file named qcow2", filepath.Join(snaps, "rawq", "disk.qcow2"), "qcow2", "not a qcow2 image"},
		{"a missing snapshot", filepath.Join(snaps, "gone", "disk.qcow2"), "qcow2", "which is gone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			craftOverlay(t, top, c.backing, c.format)
			err := s.CheckOverlay(top)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("CheckOverlay = %v, want an error containing %q", err, c.want)
			}
		})
	}
	// Its own raw snapshot recorded as qcow2.
	os.Mkdir(filepath.Join(snaps, "r"), 0o700)
	os.WriteFile(filepath.Join(snaps, "r", "disk.raw"), make([]byte, diskSize), 0o444)
	craftOverlay(t, top, filepath.Join(snaps, "r", "disk.raw"), "qcow2")
	if err := s.CheckOverlay(top); err == nil || !strings.Contains(err.Error(), `records format "qcow2"`) {
		t.Errorf("a raw layer recorded as qcow2: %v", err)
	}
	// A chain of exactly MaxChain layers under the disk is fine.
	craftOverlay(t, top, filepath.Join(snaps, "deep01", "disk.qcow2"), "qcow2")
	if err := s.CheckOverlay(top); err != nil {
		t.Errorf("a chain of %d layers: %v", MaxChain, err)
	}
}

// An instance whose disk reaches a golden disk through snapshot layers
// uses it; so does one whose snapshot create was cut short with the disk
// in the snapshot and no overlay yet.
func TestDependantsThroughSnapshots(t *testing.T) {
	noReflinks(t)
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	other := publishTest(t, s, testKey(2), []byte("other"))
	snapped(t, s, g, "box")
	q, _ := snapped(t, s, g, "cut")
	os.Remove(q.DiskFor(instance.DiskQcow2)) // as if cut before its overlay
	users, err := s.Dependants(g)
	if err != nil || !reflect.DeepEqual(users, []string{"box", "cut"}) {
		t.Fatalf("Dependants = %v, %v; want box and cut", users, err)
	}
	var inUse *InUseError
	if err := s.Remove(g); !asInUse(err, &inUse) {
		t.Errorf("Remove of a golden disk under snapshots: %v", err)
	}
	removed, err := s.Prune()
	if err != nil || len(removed) != 1 || removed[0].Key != other.Key {
		t.Errorf("Prune removed %v, %v; want only the unused disk", removed, err)
	}
	if got, _ := s.Lookup(g.Key); got == nil {
		t.Fatal("Prune removed a golden disk under snapshots")
	}
}
