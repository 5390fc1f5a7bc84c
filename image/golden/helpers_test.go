package golden

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/units"
)

// diskSize is every test disk's size: a multiple of 512, as an overlay's
// virtual size must be.
const diskSize = 1 << 20

// newStore is the store of a fresh COWORK_HOME-like folder.
func newStore(t *testing.T) Store {
	t.Helper()
	home := t.TempDir()
	return Store{Dir: filepath.Join(home, instance.CacheDir, "golden"), Home: home}
}

// newInstance makes the stopped instance name in s.Home: its saved config
// and a raw disk of diskSize whose first bytes say whose it is.
func newInstance(t *testing.T, s Store, name string) (instance.Paths, *instance.Config, []byte) {
	t.Helper()
	p := instance.Paths(filepath.Join(s.Home, name))
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &instance.Config{Name: name, Disk: units.Size(diskSize), Arch: "arm64", Boot: instance.BootEFI}
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Disk(), []byte("the disk of "+name), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p.Disk(), diskSize); err != nil {
		t.Fatal(err)
	}
	return p, cfg, readFile(t, p.Disk())
}

// testKey is a valid key, different for each n.
func testKey(n int) string { return Spec{Arch: fmt.Sprint("arch", n)}.Key() }

func testMeta(key, from string) Meta {
	return Meta{Key: key, Spec: Spec{Schema: Schema}, Image: "/images/test.img", Provision: "nothing",
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), From: from, Version: "test"}
}

// publishTest makes a golden disk with key in s, with content, as a
// capture would have left it.
func publishTest(t *testing.T, s Store, key string, content []byte) *Golden {
	t.Helper()
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(s.Dir, tmpDir+"test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, diskName), content, 0o600); err != nil {
		t.Fatal(err)
	}
	m := testMeta(key, "test")
	m.Size = int64(len(content))
	g, err := s.publish(tmp, m)
	if err != nil || g == nil {
		t.Fatalf("publish %s: %v", short(key), err)
	}
	return g
}

// noReflinks makes the package take its overlay path, whatever file
// system the test runs on.
func noReflinks(t *testing.T) {
	t.Helper()
	old := reflink
	reflink = func(src, dst string) error { return errors.ErrUnsupported }
	t.Cleanup(func() { reflink = old })
}

// copyReflinks makes the package take its reflink path with a copy in
// place of the clone; the copy keeps the source's mode, as a file
// system's clone of a read-only golden disk may.
func copyReflinks(t *testing.T) {
	t.Helper()
	old := reflink
	reflink = func(src, dst string) error {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		st, err := in.Stat()
		if err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return err
	}
	t.Cleanup(func() { reflink = old })
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadConfig reads the instance's saved config (not the one in memory).
func loadConfig(t *testing.T, p instance.Paths) *instance.Config {
	t.Helper()
	var c instance.Config
	if err := json.Unmarshal(readFile(t, p.Config()), &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

func exist(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// leftovers are the store's .tmp- folders.
func leftovers(t *testing.T, s Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpDir) {
			out = append(out, e.Name())
		}
	}
	return out
}

// backingOf is the backing file named by the qcow2 disk at path.
func backingOf(t *testing.T, path string) string {
	t.Helper()
	info, err := qcow2.ReadInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Backing
}

// assertOnGolden checks that the instance in p runs from an overlay on g
// and says so in its saved config, and that g holds want.
func assertOnGolden(t *testing.T, s Store, p instance.Paths, g *Golden, want []byte) {
	t.Helper()
	if exist(p.Disk()) {
		t.Errorf("the instance still has a raw disk")
	}
	if b := backingOf(t, p.DiskFor(instance.DiskQcow2)); b != g.Disk() {
		t.Errorf("overlay backing %q, want %q", b, g.Disk())
	}
	if err := s.CheckOverlay(p.DiskFor(instance.DiskQcow2)); err != nil {
		t.Errorf("CheckOverlay refuses the capture's own overlay: %v", err)
	}
	if c := loadConfig(t, p); c.Format() != instance.DiskQcow2 || c.Golden != g.Key {
		t.Errorf("saved config: format %q golden %q; want qcow2 on %s", c.Format(), c.Golden, short(g.Key))
	}
	if !bytes.Equal(readFile(t, g.Disk()), want) {
		t.Errorf("the golden disk does not hold the instance's disk")
	}
	if m := mode(t, g.Disk()); m.Perm() != 0o444 {
		t.Errorf("golden disk mode %v, want 0444", m)
	}
	if exist(p.Capture()) {
		t.Errorf("capture.json is left")
	}
}

// craftOverlay writes a qcow2 overlay at path naming backing (any string,
// as a hand-made file could) in the backing format format ("" for no
// backing-format extension).
func craftOverlay(t *testing.T, path, backing, format string) {
	t.Helper()
	dummy := filepath.Join(t.TempDir(), "dummy.raw")
	if err := os.WriteFile(dummy, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "x.qcow2")
	if err := qcow2.CreateOverlay(tmp, dummy, diskSize); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, tmp)
	be := binary.BigEndian
	const extOff = 104 // the v3 header's end: the backing-format extension
	if format == "" {
		be.PutUint32(b[extOff:], 0) // the end marker first: no extension
	} else {
		if len(format) > 8 {
			t.Fatalf("format %q does not fit", format)
		}
		be.PutUint32(b[extOff+4:], uint32(len(format)))
		copy(b[extOff+8:extOff+16], make([]byte, 8))
		copy(b[extOff+8:], format)
	}
	nameOff := be.Uint64(b[8:])
	copy(b[nameOff:nameOff+1024], make([]byte, 1024))
	copy(b[nameOff:], backing)
	be.PutUint32(b[16:], uint32(len(backing)))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := qcow2.ReadInfo(path)
	if err != nil || info.Backing != backing || info.BackingFormat != format {
		t.Fatalf("crafted overlay reads as %+v, %v", info, err)
	}
}
