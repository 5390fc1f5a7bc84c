package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// newChain makes raw ← mid.qcow2 ← top.qcow2 (top's backing format
// qcow2), all of virtual size size.
func newChain(t *testing.T, size int64) (top, mid string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	backing, data := makeBacking(t, dir, backingSize)
	mid = filepath.Join(dir, "mid.qcow2")
	if err := CreateOverlay(mid, backing, size); err != nil {
		t.Fatal(err)
	}
	top = filepath.Join(dir, "top.qcow2")
	if err := CreateOverlayOn(top, mid, FormatQcow2, size); err != nil {
		t.Fatal(err)
	}
	return top, mid, data
}

// An overlay on a qcow2 layer records format qcow2 and reads through both
// layers to the raw disk at the bottom.
func TestOverlayOnQcow2(t *testing.T) {
	const size = 8 * clusterSize
	top, mid, data := newChain(t, size)
	info, err := ReadInfo(top)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Size: size, Backing: mid, BackingFormat: "qcow2", ClusterBits: clusterBits}); *info != want {
		t.Errorf("ReadInfo = %+v, want %+v", *info, want)
	}
	want := make([]byte, size)
	copy(want, data)
	if got := readThrough(t, top); !bytes.Equal(got, want) {
		t.Error("the top overlay does not read as the raw disk two layers down")
	}
	if n, err := Written(top); err != nil || n != 0 {
		t.Errorf("Written of a new overlay = %d, %v; want 0", n, err)
	}
}

func TestCreateOverlayOnBadInput(t *testing.T) {
	dir := t.TempDir()
	raw, _ := makeBacking(t, dir, backingSize)
	mid := filepath.Join(dir, "mid.qcow2")
	if err := CreateOverlay(mid, raw, 16*clusterSize); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, backing, format string
		size                  int64
		want                  string
	}{
		{"a raw file called qcow2", raw, FormatQcow2, 8 * clusterSize, "not a qcow2 image"},
		{"below the qcow2 layer's virtual size", mid, FormatQcow2, 8 * clusterSize, "below the backing file's size 1048576"},
		{"an unknown format", raw, "vmdk", 8 * clusterSize, `backing format "vmdk"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "o.qcow2")
			err := CreateOverlayOn(path, c.backing, c.format, c.size)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CreateOverlayOn = %v, want an error containing %q", err, c.want)
			}
			if _, err := os.Lstat(path); err == nil {
				t.Error("something left at path")
			}
			assertNoTmp(t, path)
		})
	}
}

// QEMU opens the chain, writes into the top only, and Written counts what
// it wrote (in clusters) while the layer below keeps reading 0.
func TestQemuChainAndWritten(t *testing.T) {
	qemuImg := needTool(t, "qemu-img")
	qemuIO := needTool(t, "qemu-io")
	const size = 8 * clusterSize
	top, mid, _ := newChain(t, size)
	got := qemuImgInfo(t, qemuImg, top)
	if want := (qemuInfo{VirtualSize: size, Format: "qcow2", Backing: mid, BackingFormat: "qcow2", ClusterSize: clusterSize}); got != want {
		t.Errorf("qemu-img info = %+v, want %+v", got, want)
	}
	qemuCheck(t, qemuImg, top)
	out, err := exec.Command(qemuIO, "-f", "qcow2",
		"-c", "write -P 0xab 0 64k",
		"-c", "write -P 0xcd 320k 4k",
		"-c", "write -z 448k 64k",
		top).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) || strings.Count(string(out), "wrote ") != 3 {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	qemuCheck(t, qemuImg, top)
	if n, err := Written(top); err != nil || n != 3*clusterSize {
		t.Errorf("Written after three cluster writes = %d, %v; want %d", n, err, 3*clusterSize)
	}
	if n, err := Written(mid); err != nil || n != 0 {
		t.Errorf("Written of the layer below = %d, %v; want 0", n, err)
	}
}

// A hostile image's tables are checked against the file before they are
// read.
func TestWrittenHostile(t *testing.T) {
	for _, c := range []struct {
		name string
		at   int64
		b    []byte
		want string
	}{
		{"L1 table past the end", 40, []byte{0, 0, 0, 0, 0x10, 0, 0, 0}, "not in the"},
		{"huge L1 table", 36, []byte{0xff, 0xff, 0xff, 0xff}, "above the limit"},
		{"L2 table past the end", l1TableOffset, []byte{0x80, 0, 0, 0, 0x10, 0, 0, 0}, "L2 table at"},
	} {
		t.Run(c.name, func(t *testing.T) {
			overlay, _, _ := newOverlay(t, 8*clusterSize)
			f, err := os.OpenFile(overlay, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(c.b, c.at)
			f.Close()
			if _, err := Written(overlay); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Written = %v, want an error containing %q", err, c.want)
			}
		})
	}
}
