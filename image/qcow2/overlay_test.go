package qcow2

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lima-vm/go-qcow2reader"
)

// backingSize is deliberately not a multiple of the cluster size, so reads
// cross the end of the backing file inside a cluster.
const backingSize = 3*clusterSize + 1000

// makeBacking writes a raw backing file of n bytes of a fixed, non-zero
// pattern into dir and returns its path and content.
func makeBacking(t *testing.T, dir string, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7+i/251) | 1 // never zero: a read of zeros is a miss
	}
	p := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// newOverlay makes a backing file and an overlay of size on it.
func newOverlay(t *testing.T, size int64) (overlay, backing string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	backing, data = makeBacking(t, dir, backingSize)
	overlay = filepath.Join(dir, "disk.qcow2")
	if err := CreateOverlay(overlay, backing, size); err != nil {
		t.Fatal(err)
	}
	return overlay, backing, data
}

// readThrough opens the overlay with go-qcow2reader, which follows the
// backing file named in the header, and reads the whole virtual disk.
func readThrough(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := qcow2reader.Open(f)
	if err != nil {
		t.Fatalf("qcow2reader.Open: %v", err)
	}
	defer img.Close()
	if img.Type() != "qcow2" {
		t.Fatalf("qcow2reader sees type %q, want qcow2", img.Type())
	}
	if err := img.Readable(); err != nil {
		t.Fatalf("qcow2reader: not readable: %v", err)
	}
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read through the overlay: %v", err)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	const size = 8 * clusterSize
	overlay, backing, data := newOverlay(t, size)

	st, err := os.Stat(overlay)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("overlay mode %v, want 0600", st.Mode().Perm())
	}
	if st.Size() != overlayClusters*clusterSize {
		t.Errorf("overlay is %d bytes, want %d", st.Size(), overlayClusters*clusterSize)
	}
	assertNoTmp(t, overlay)

	got := readThrough(t, overlay)
	if int64(len(got)) != size {
		t.Fatalf("virtual size %d, want %d", len(got), size)
	}
	if !bytes.Equal(got[:len(data)], data) {
		t.Errorf("the first %d bytes differ from the backing file", len(data))
	}
	if !bytes.Equal(got[len(data):], make([]byte, size-len(data))) {
		t.Errorf("bytes past the backing file's end are not zero")
	}

	info, err := ReadInfo(overlay)
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Size: size, Backing: backing, BackingFormat: "raw", ClusterBits: clusterBits}
	if *info != want {
		t.Errorf("ReadInfo = %+v, want %+v", *info, want)
	}
}

// TestRoundTripEqualSize: an overlay exactly as large as its backing file
// (the usual case for a golden disk) reads as the backing file.
func TestRoundTripEqualSize(t *testing.T) {
	dir := t.TempDir()
	backing, data := makeBacking(t, dir, 4*clusterSize)
	overlay := filepath.Join(dir, "o.qcow2")
	if err := CreateOverlay(overlay, backing, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if got := readThrough(t, overlay); !bytes.Equal(got, data) {
		t.Error("the overlay does not read as its backing file")
	}
}

func assertNoTmp(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.tmp left behind (stat: %v)", filepath.Base(path), err)
	}
}

func TestCreateOverlayBadInput(t *testing.T) {
	dir := t.TempDir()
	backing, _ := makeBacking(t, dir, backingSize)
	const good = 8 * clusterSize
	cases := []struct {
		name    string
		backing string
		size    int64
		want    string
	}{
		{"size 0", backing, 0, "not positive"},
		{"negative size", backing, -512, "not positive"},
		{"size not a multiple of 512", backing, good + 1, "multiple of 512"},
		{"above MaxSize", backing, MaxSize + 512, "above the limit"},
		{"below the backing size", backing, 2 * clusterSize, "below the backing file's size"},
		{"relative backing path", "disk.raw", good, "not an absolute path"},
		{"backing missing", filepath.Join(dir, "nope.raw"), good, "no such file"},
		{"backing is a directory", dir, good, "not a regular file"},
		{"backing name too long", "/" + strings.Repeat("a", 1100), good, "at most 1023"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "o.qcow2")
			err := CreateOverlay(path, c.backing, c.size)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CreateOverlay = %v, want an error containing %q", err, c.want)
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("something left at path (stat: %v)", err)
			}
			assertNoTmp(t, path)
		})
	}

	t.Run("existing path", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "o.qcow2")
		if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := CreateOverlay(path, backing, good)
		if err == nil || !strings.Contains(err.Error(), "exists") {
			t.Fatalf("CreateOverlay over an existing file = %v, want an error", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Errorf("the existing file was changed to %q", b)
		}
		assertNoTmp(t, path)
	})

	t.Run("stale tmp is not ours", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "o.qcow2")
		if err := os.WriteFile(path+".tmp", []byte("other"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := CreateOverlay(path, backing, good); err == nil {
			t.Fatal("CreateOverlay with a path.tmp in the way succeeded")
		}
		if b, _ := os.ReadFile(path + ".tmp"); string(b) != "other" {
			t.Errorf("another writer's tmp file was changed to %q", b)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("something left at path (stat: %v)", err)
		}
	})
}

func TestResize(t *testing.T) {
	const size = 8 * clusterSize
	overlay, _, data := newOverlay(t, size)

	if err := Resize(overlay, size); err != nil {
		t.Fatalf("Resize to the same size: %v", err)
	}
	const bigger = 32 * clusterSize
	if err := Resize(overlay, bigger); err != nil {
		t.Fatalf("grow: %v", err)
	}
	info, err := ReadInfo(overlay)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != bigger {
		t.Errorf("size after grow %d, want %d", info.Size, bigger)
	}
	got := readThrough(t, overlay)
	if int64(len(got)) != bigger || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, bigger-len(data))) {
		t.Error("after grow the overlay does not read as the backing file followed by zeros")
	}

	for _, c := range []struct {
		name string
		size int64
		want string
	}{
		{"shrink", size, "below the current size"},
		{"beyond MaxSize", MaxSize + 512, "above the limit of 4398046511104"},
		{"not a multiple of 512", bigger + 100, "multiple of 512"},
	} {
		if err := Resize(overlay, c.size); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Resize = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if info, err := ReadInfo(overlay); err != nil || info.Size != bigger {
		t.Errorf("a refused Resize changed the image: %+v, %v", info, err)
	}

	if err := Resize(overlay, MaxSize); err != nil {
		t.Fatalf("grow to MaxSize: %v", err)
	}
}

// TestResizeL1Limit: an image whose L1 table covers less than MaxSize
// (as one made by another tool may) cannot grow past what it covers.
func TestResizeL1Limit(t *testing.T) {
	overlay, _, _ := newOverlay(t, 8*clusterSize)
	f, err := os.OpenFile(overlay, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0, 0, 0, 2}, 36); err != nil { // l1_size = 2: 1 GiB
		t.Fatal(err)
	}
	f.Close()
	if err := Resize(overlay, 1<<30); err != nil {
		t.Fatalf("grow to what the L1 table covers: %v", err)
	}
	err = Resize(overlay, 1<<30+512)
	if err == nil || !strings.Contains(err.Error(), "1073741824 bytes its L1 table (2 entries) covers") {
		t.Fatalf("grow past the L1 table = %v, want an error naming the limit", err)
	}
}

func TestL1Coverage(t *testing.T) {
	if got := l1Coverage(l1Entries, clusterBits); got != MaxSize {
		t.Errorf("one cluster of L1 covers %d, want MaxSize %d", got, MaxSize)
	}
	if got := l1Coverage(1<<32-1, maxClusterBits); got != 1<<63-1 {
		t.Errorf("huge L1 = %d, want saturation", got)
	}
	if got := l1Coverage(0, clusterBits); got != 0 {
		t.Errorf("empty L1 = %d", got)
	}
}
