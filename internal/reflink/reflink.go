// Package reflink copies files the cheapest way the file system allows:
// a reflink (FICLONE on Linux's btrfs and XFS, clonefile(2) on APFS),
// which shares blocks until either copy is written, else a sparse copy
// that reads and writes only the data, not the holes (disk images are
// mostly holes).
package reflink

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Copy copies src to dst, which must not exist, with mode 0600. It says
// whether it made a reflink; a failed copy leaves nothing at dst.
func Copy(src, dst string) (reflinked bool, err error) {
	switch err := File(src, dst); {
	case err == nil:
		return true, os.Chmod(dst, 0o600)
	case !errors.Is(err, errors.ErrUnsupported):
		return false, err
	}
	return false, sparseCopy(src, dst)
}

// sparseCopy copies src's data extents to a new dst of the same size.
func sparseCopy(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	size := st.Size()
	for off := int64(0); off < size; {
		start, end, ok := nextData(in, off, size)
		if !ok {
			break
		}
		if _, err := in.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if n, err := io.CopyN(out, in, end-start); err != nil {
			return fmt.Errorf("copy %s: %w (at %d of %d)", src, err, start+n, size)
		}
		off = end
	}
	return out.Sync()
}
