//go:build !linux

package reflink

import "os"

// nextData takes the whole rest of the file as data where SEEK_DATA is
// not used (macOS copies by clonefile).
func nextData(f *os.File, off, size int64) (start, end int64, ok bool) {
	return off, size, off < size
}
