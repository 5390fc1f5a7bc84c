// Package smallfile reads the small records cowork keeps beside disks
// (meta.json, capture and snapshot intents): files a user, a bug or
// another program may have replaced, so each is read with care.
package smallfile

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Max is the most Read reads: the records are a few hundred bytes.
const Max = 64 << 10

// Read reads the regular file at path, of at most Max bytes, not through
// a symlink and without blocking on a fifo.
func Read(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > Max {
		return nil, fmt.Errorf("%s: not a small regular file", path)
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

// WriteAtomic writes data to a temporary file beside path (with mode,
// synced) and renames it over path: a crash leaves the old
// file or the new, whole.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
