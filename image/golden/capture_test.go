package golden

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
)

// Without reflinks the instance's disk itself becomes the golden disk
// and the instance goes on from an overlay on it; a second capture of the
// same key finds it and leaves its instance alone.
func TestCaptureMovesTheDisk(t *testing.T) {
	noReflinks(t)
	s := newStore(t)
	p, cfg, content := newInstance(t, s, "first")
	key := testKey(1)

	g, err := s.Capture(p, cfg, testMeta(key, "first"))
	if err != nil {
		t.Fatal(err)
	}
	if g.Key != key || g.Dir != filepath.Join(s.Dir, key) || g.Size != diskSize || g.From != "first" {
		t.Fatalf("captured %+v", g)
	}
	assertOnGolden(t, s, p, g, content)
	if cfg.Format() != instance.DiskQcow2 || cfg.Golden != key {
		t.Errorf("the caller's config: format %q golden %q", cfg.Format(), cfg.Golden)
	}
	if got, err := s.Lookup(key); err != nil || got == nil || got.Size != diskSize || got.Image != "/images/test.img" ||
		got.Allocated <= 0 || got.Allocated > diskSize {
		t.Errorf("Lookup after capture: %+v, %v", got, err)
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("left %v", l)
	}

	p2, cfg2, content2 := newInstance(t, s, "second")
	g2, err := s.Capture(p2, cfg2, testMeta(key, "second"))
	if err != nil {
		t.Fatal(err)
	}
	if g2.Key != key || g2.From != "first" {
		t.Errorf("second capture returned %+v, want the first's golden disk", g2)
	}
	if !bytes.Equal(readFile(t, p2.Disk()), content2) || exist(p2.DiskFor(instance.DiskQcow2)) {
		t.Errorf("the second instance's disk was touched")
	}
	if c := loadConfig(t, p2); c.Format() != instance.DiskRaw || c.Golden != "" || cfg2.Golden != "" {
		t.Errorf("second instance's config: format %q golden %q", c.Format(), c.Golden)
	}
	if !bytes.Equal(readFile(t, g.Disk()), content) {
		t.Errorf("the golden disk changed")
	}

	// An instance on a golden disk has nothing to capture.
	if _, err := s.Capture(p, cfg, testMeta(testKey(2), "first")); err == nil {
		t.Errorf("captured an overlay instance again")
	}
	if _, err := s.Capture(p2, cfg2, testMeta("../../etc", "second")); err == nil {
		t.Errorf("captured under a key that is a path")
	}
}

// With reflinks the instance keeps its raw disk, the golden disk is a
// separate file, and a clone is a raw disk of its own.
func TestCaptureAndCloneWithReflinks(t *testing.T) {
	copyReflinks(t)
	s := newStore(t)
	p, cfg, content := newInstance(t, s, "first")
	key := testKey(1)

	g, err := s.Capture(p, cfg, testMeta(key, "first"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p.Disk()), content) || exist(p.DiskFor(instance.DiskQcow2)) {
		t.Errorf("the instance lost its raw disk")
	}
	if os.SameFile(stat(t, p.Disk()), stat(t, g.Disk())) {
		t.Errorf("the golden disk is the instance's file")
	}
	if !bytes.Equal(readFile(t, g.Disk()), content) || mode(t, g.Disk()).Perm() != 0o444 {
		t.Errorf("the golden disk: mode %v, same bytes %v", mode(t, g.Disk()), bytes.Equal(readFile(t, g.Disk()), content))
	}
	if c := loadConfig(t, p); c.Format() != instance.DiskRaw || c.Golden != key {
		t.Errorf("saved config: format %q golden %q; want raw from %s", c.Format(), c.Golden, short(key))
	}
	if exist(p.Capture()) || len(leftovers(t, s)) != 0 {
		t.Errorf("capture.json or a .tmp- folder left: %v", leftovers(t, s))
	}

	q := instance.Paths(filepath.Join(s.Home, "clone"))
	os.MkdirAll(q.Dir(), 0o700)
	if _, err := s.Clone(g, q, diskSize-512); err == nil {
		t.Errorf("cloned into a disk smaller than the golden disk")
	}
	if entries, _ := os.ReadDir(q.Dir()); len(entries) != 0 {
		t.Errorf("a refused clone wrote %v", entries)
	}
	format, err := s.Clone(g, q, 2*diskSize)
	if err != nil || format != instance.DiskRaw {
		t.Fatalf("Clone: %q, %v", format, err)
	}
	b := readFile(t, q.Disk())
	if len(b) != 2*diskSize || !bytes.Equal(b[:diskSize], content) || !bytes.Equal(b[diskSize:], make([]byte, diskSize)) {
		t.Errorf("the clone is %d bytes, not the golden disk's grown to %d", len(b), 2*diskSize)
	}
	if m := mode(t, q.Disk()); m.Perm() != 0o600 {
		t.Errorf("clone mode %v, want 0600", m)
	}
	if exist(q.Disk()+".tmp") || exist(q.DiskFor(instance.DiskQcow2)) {
		t.Errorf("Clone left a temporary file or an overlay")
	}
}

// Another capture that publishes the same key first wins; a reflink
// capture then returns its golden disk, not an error.
func TestCaptureReflinkRaceLost(t *testing.T) {
	s := newStore(t)
	p, cfg, content := newInstance(t, s, "first")
	key := testKey(1)
	var other *Golden
	old := reflink
	t.Cleanup(func() { reflink = old })
	copyReflinks(t)
	copying := reflink
	reflink = func(src, dst string) error {
		other = publishTest(t, s, key, []byte("the other capture's disk"))
		return copying(src, dst)
	}
	g, err := s.Capture(p, cfg, testMeta(key, "first"))
	if err != nil || g == nil || g.From != other.From || !bytes.Equal(readFile(t, g.Disk()), []byte("the other capture's disk")) {
		t.Fatalf("Capture after losing the race: %+v, %v; want the winner's disk", g, err)
	}
	if !bytes.Equal(readFile(t, p.Disk()), content) || len(leftovers(t, s)) != 0 {
		t.Errorf("the instance's disk changed, or a .tmp- folder is left: %v", leftovers(t, s))
	}
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Without reflinks a clone is an overlay on the golden disk; a size below
// the golden disk's writes nothing.
func TestCloneOverlay(t *testing.T) {
	noReflinks(t)
	s := newStore(t)
	content := bytes.Repeat([]byte("golden"), diskSize/6)
	content = content[:diskSize/2]
	g := publishTest(t, s, testKey(1), content)

	q := instance.Paths(filepath.Join(s.Home, "clone"))
	os.MkdirAll(q.Dir(), 0o700)
	if _, err := s.Clone(g, q, int64(len(content))-512); err == nil {
		t.Errorf("cloned into a disk smaller than the golden disk")
	}
	if entries, _ := os.ReadDir(q.Dir()); len(entries) != 0 {
		t.Errorf("a refused clone wrote %v", entries)
	}
	format, err := s.Clone(g, q, diskSize)
	if err != nil || format != instance.DiskQcow2 {
		t.Fatalf("Clone: %q, %v", format, err)
	}
	if b := backingOf(t, q.DiskFor(instance.DiskQcow2)); b != g.Disk() {
		t.Errorf("clone's backing %q, want %q", b, g.Disk())
	}
	if exist(q.Disk()) || exist(q.Disk()+".tmp") {
		t.Errorf("an overlay clone left a raw file")
	}
	if err := s.CheckOverlay(q.DiskFor(instance.DiskQcow2)); err != nil {
		t.Errorf("CheckOverlay refuses a clone: %v", err)
	}
}

// The real reflink either clones (same bytes) or says it cannot, leaving
// nothing behind.
func TestReflinkFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("some blocks"), 0o444)
	switch err := reflinkFile(src, dst); {
	case err == nil:
		if !bytes.Equal(readFile(t, dst), []byte("some blocks")) {
			t.Errorf("the clone differs")
		}
	case errors.Is(err, errors.ErrUnsupported):
		if exist(dst) {
			t.Errorf("a failed reflink left %s", dst)
		}
	default:
		t.Fatalf("reflink: %v", err)
	}
}
