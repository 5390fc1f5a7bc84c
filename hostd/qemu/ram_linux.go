//go:build linux

package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// newGuestRAM makes the memfd the guest's RAM lives in: size bytes, all
// hole until the guest touches them. QEMU maps it (ramFD); hostd only
// reads and writes it with pread/pwrite when it saves or restores a guest,
// and never maps it, so the guest's memory never counts in hostd's RSS.
func newGuestRAM(size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("cowork-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("make the guest's memory (memfd_create): %w", err)
	}
	f := os.NewFile(uintptr(fd), "guest-ram")
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("size the guest's memory to %d MiB: %w", size>>20, err)
	}
	return f, nil
}

// pageSize is the granule of the extent copy: a page the guest never
// touched, or one it left all zeros, stays a hole.
const pageSize = 4096

// copyChunk is how much of an extent is read at once.
const copyChunk = 1 << 20

// copyExtents copies what src holds in its first size bytes to dst at the
// same offsets, and makes dst exactly size bytes long. Only src's data
// extents (SEEK_DATA/SEEK_HOLE) are read, and only their pages that are
// not all zeros are written: dst stays as sparse as the guest's memory
// is, whether dst is the saved RAM file (save) or a new memfd (restore).
// dst must be empty. It returns the bytes written.
func copyExtents(dst, src *os.File, size int64) (int64, error) {
	if err := dst.Truncate(size); err != nil {
		return 0, fmt.Errorf("size %s: %w", dst.Name(), err)
	}
	buf := make([]byte, copyChunk)
	zero := make([]byte, pageSize)
	var written int64
	for off := int64(0); off < size; {
		data, err := src.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return written, fmt.Errorf("find data in %s: %w", src.Name(), err)
		}
		hole, err := src.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return written, fmt.Errorf("find a hole in %s: %w", src.Name(), err)
		}
		hole = min(hole, size)
		for pos := data; pos < hole; {
			n := int(min(int64(len(buf)), hole-pos))
			if _, err := src.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
				return written, err // an *os.PathError: "read PATH: why"
			}
			w, err := writeNonZero(dst, buf[:n], pos, zero)
			written += w
			if err != nil {
				return written, err // "write PATH: no space left on device"
			}
			pos += int64(n)
		}
		off = hole
	}
	return written, nil
}

// writeNonZero writes b at off in f, page by page, skipping all-zero
// pages; runs of pages that are not go out in one write.
func writeNonZero(f *os.File, b []byte, off int64, zero []byte) (int64, error) {
	var written int64
	start := -1 // first page of the run being collected
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		n, err := f.WriteAt(b[start:end], off+int64(start))
		written += int64(n)
		start = -1
		return err
	}
	for p := 0; p < len(b); p += pageSize {
		end := min(p+pageSize, len(b))
		if bytes.Equal(b[p:end], zero[:end-p]) {
			if err := flush(p); err != nil {
				return written, err
			}
			continue
		}
		if start < 0 {
			start = p
		}
	}
	return written, flush(len(b))
}
