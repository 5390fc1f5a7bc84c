package reflink

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A sparse disk image copies whole and stays sparse: the data at its
// offsets, the holes still holes.
func TestCopyKeepsDataAndHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	f, _ := os.Create(src)
	f.Truncate(64 << 20)
	f.WriteAt(bytes.Repeat([]byte("a"), 4096), 0)
	f.WriteAt(bytes.Repeat([]byte("b"), 8192), 32<<20)
	f.WriteAt([]byte("end"), 64<<20-3)
	f.Close()
	dst := filepath.Join(dir, "copy.raw")
	if _, err := Copy(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("the copy differs")
	}
	var st syscall.Stat_t
	syscall.Stat(dst, &st)
	if used := st.Blocks * 512; used > 4<<20 {
		t.Errorf("the copy takes %d bytes of a 64 MiB file with 12 KiB of data: not sparse", used)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if _, err := Copy(src, dst); err == nil {
		t.Error("copied over an existing file")
	}
	if _, err := Copy(filepath.Join(dir, "missing"), filepath.Join(dir, "x")); err == nil {
		t.Error("copied a missing file")
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a failed copy left its target")
	}
}
