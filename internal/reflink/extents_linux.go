package reflink

import (
	"os"

	"golang.org/x/sys/unix"
)

// nextData finds the first data extent at or after off: [start, end).
func nextData(f *os.File, off, size int64) (start, end int64, ok bool) {
	start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		return 0, 0, false // ENXIO: only a hole is left
	}
	end, err = unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
	if err != nil || end > size {
		end = size
	}
	return start, end, true
}
