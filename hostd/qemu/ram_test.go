//go:build linux

package qemu

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// extents lists a file's data extents as [start, end) pairs.
func extents(t *testing.T, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for off := int64(0); off < size; {
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]int64{data, hole})
		off = hole
	}
	return out
}

func allocated(t *testing.T, f *os.File) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// A sparse guest memory copies to a sparse file and back into a new memfd
// with the same bytes and its holes kept: only the pages that hold
// something are written, and a page of zeros inside written data becomes
// a hole too. The file and the memfd are what Save and Restore copy.
func TestCopyExtentsKeepsHoles(t *testing.T) {
	const size = 64 << 20
	mem, err := newGuestRAM(size)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, pageSize) }
	writes := map[int64][]byte{
		0:                      page(1),
		5*pageSize + 100:       []byte("not page aligned"),
		3 << 20:                bytes.Repeat(page(2), 300), // crosses a copyChunk boundary
		size - pageSize:        page(3),                    // the last page
		20 << 20:               page(0),                    // written, but zeros
		20<<20 + 2*pageSize:    page(4),
		copyChunk - pageSize/2: []byte("straddles a chunk"),
	}
	for off, b := range writes {
		if _, err := mem.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "ram"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n, err := copyExtents(out, mem, size)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := out.Stat(); st.Size() != size {
		t.Fatalf("the copy is %d bytes, want %d", st.Size(), size)
	}
	// The pages holding data: 0, 5, 15 (the straddle may span 255 and
	// 256), 300 of 3 MiB, 1 of 20 MiB + 2 pages, and the last one.
	if max := int64(306 * pageSize); n > max || n < 303*pageSize {
		t.Errorf("wrote %d bytes, want about %d: the holes were not kept", n, max)
	}
	if a := allocated(t, out); a > 512<<10+int64(306*pageSize) {
		t.Errorf("the copy takes %d bytes on disk: not sparse", a)
	}
	for _, e := range extents(t, out, size) {
		if e[0] <= 20<<20 && e[1] > 20<<20 {
			t.Errorf("the zero page at 20 MiB is in a data extent %v", e)
		}
	}

	back, err := newGuestRAM(size)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := copyExtents(back, out, size); err != nil {
		t.Fatal(err)
	}
	same(t, mem, back, size)
	if a, b := allocated(t, back), allocated(t, mem); a >= b {
		t.Errorf("the restored memfd holds %d bytes, the original %d: the zero page was written", a, b)
	}
}

// same compares two files' first size bytes.
func same(t *testing.T, a, b *os.File, size int64) {
	t.Helper()
	ba, bb := make([]byte, copyChunk), make([]byte, copyChunk)
	for off := int64(0); off < size; off += copyChunk {
		if _, err := a.ReadAt(ba, off); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(bb, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ba, bb) {
			t.Fatalf("the copy differs in the MiB at %d", off)
		}
	}
}

// An empty memory copies to a file of holes; a copy cut short at size
// leaves out what lies beyond.
func TestCopyExtentsEmptyAndBounded(t *testing.T) {
	mem, err := newGuestRAM(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	out, err := os.Create(filepath.Join(t.TempDir(), "ram"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if n, err := copyExtents(out, mem, 8<<20); err != nil || n != 0 {
		t.Fatalf("empty memory: %d bytes, %v", n, err)
	}
	if len(extents(t, out, 8<<20)) != 0 {
		t.Error("an empty memory left data in the copy")
	}
	mem.WriteAt([]byte("beyond"), 6<<20)
	out2, err := os.Create(filepath.Join(t.TempDir(), "ram2"))
	if err != nil {
		t.Fatal(err)
	}
	defer out2.Close()
	if n, err := copyExtents(out2, mem, 4<<20); err != nil || n != 0 {
		t.Fatalf("copy of the first 4 MiB: %d bytes, %v", n, err)
	}
	if st, _ := out2.Stat(); st.Size() != 4<<20 {
		t.Errorf("size %d", st.Size())
	}
}

// A disk that fills up mid-copy is an error that says so (ENOSPC), not a
// short file taken for a saved guest.
func TestCopyExtentsDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).Run(); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	mem, err := newGuestRAM(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := mem.WriteAt(bytes.Repeat([]byte{7}, 4<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "ram"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n, err := copyExtents(out, mem, 16<<20)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("copy to a full disk: %d bytes, %v; want ENOSPC", n, err)
	}
	t.Logf("%v", err)
}
