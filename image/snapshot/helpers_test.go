package snapshot

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/lima-vm/go-qcow2reader"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/units"
)

// diskSize is every test disk's size: a multiple of 512.
const diskSize = 1 << 20

// newInstance makes the stopped instance box in a fresh folder: a saved
// config and a raw disk of diskSize that says whose it is.
func newInstance(t *testing.T) (instance.Paths, *instance.Config, []byte) {
	t.Helper()
	p := instance.Paths(filepath.Join(t.TempDir(), "box"))
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &instance.Config{Name: "box", Disk: units.Size(diskSize), Arch: "arm64", Boot: instance.BootEFI}
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, diskSize)
	copy(data, "the disk of box")
	copy(data[diskSize-16:], "and its end")
	if err := os.WriteFile(p.Disk(), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, cfg, data
}

// loadCfg reads the config as a new process would.
func loadCfg(t *testing.T, p instance.Paths) *instance.Config {
	t.Helper()
	b, err := os.ReadFile(p.Config())
	if err != nil {
		t.Fatal(err)
	}
	var c instance.Config
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// content is what the guest would see on the instance's disk, read through
// every layer.
func content(t *testing.T, p instance.Paths, cfg *instance.Config) []byte {
	t.Helper()
	path := cfg.DiskPath(p)
	if cfg.Format() == instance.DiskRaw {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := qcow2reader.Open(f)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer img.Close()
	if err := img.Readable(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// write puts data at cluster 0 of the overlay at path as QEMU would: a
// new L2 table and a data cluster after the overlay's four clusters, the
// L1 entry pointing at the table. The overlay must be a fresh one.
func write(t *testing.T, path string, data []byte) {
	t.Helper()
	const cluster = 1 << 16
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l2, dataAt := int64(4*cluster), int64(5*cluster)
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(l2)|1<<63)
	f.WriteAt(e[:], 3*cluster) // L1[0]
	binary.BigEndian.PutUint64(e[:], uint64(dataAt)|1<<63)
	f.WriteAt(e[:], l2) // L2[0]
	buf := make([]byte, cluster)
	copy(buf, data)
	if _, err := f.WriteAt(buf, dataAt); err != nil {
		t.Fatal(err)
	}
}

func wantContent(t *testing.T, got, want []byte, what string) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: the disk does not read as it should (%d bytes, first %q)", what, len(got), got[:min(20, len(got))])
	}
}
