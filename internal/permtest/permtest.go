// Package permtest helps tests prove the modes of the files cowork makes:
// with the umask cleared, a mode that grants too much shows instead of
// being masked by the caller's umask.
package permtest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// ClearUmask sets the process's umask to 0 for the rest of the test.
func ClearUmask(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
}

// WantMode fails the test unless path's permission bits are want.
func WantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", filepath.Base(path), st.Mode().Perm(), want)
	}
}
