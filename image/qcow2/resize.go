package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
)

// Resize sets the virtual size of an overlay made by CreateOverlay (grow
// only; equal is a no-op; above MaxSize or above what its L1 table covers
// is an error naming the limit). Rewrites the 8-byte size field in place
// and fsyncs.
//
// Growing needs nothing else: the L1 table already covers MaxSize, and
// the new range reads through to the backing file and then as zeros.
// Shrinking would drop clusters the guest wrote, so it is refused. Call it
// only while no QEMU has the image open: QEMU keeps the size it read.
func Resize(path string, size int64) error {
	if err := checkSize(size); err != nil {
		return fmt.Errorf("qcow2: resize %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("qcow2: resize: %w", err)
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return fmt.Errorf("qcow2: resize %s: %w", path, err)
	}
	if h.version != 3 {
		return fmt.Errorf("qcow2: resize %s: version %d image; only the v3 overlays CreateOverlay makes can be resized here", path, h.version)
	}
	if size == h.Size {
		return nil
	}
	if size < h.Size {
		return fmt.Errorf("qcow2: resize %s: %d is below the current size %d; shrinking would drop what the guest wrote, so it is refused", path, size, h.Size)
	}
	if covered := l1Coverage(h.l1Size, h.ClusterBits); size > covered {
		return fmt.Errorf("qcow2: resize %s: %d is above the %d bytes its L1 table (%d entries) covers; make a new overlay instead", path, size, covered, h.l1Size)
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(size))
	if _, err := f.WriteAt(b[:], sizeOffset); err != nil {
		return fmt.Errorf("qcow2: resize %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qcow2: resize %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("qcow2: resize %s: %w", path, err)
	}
	return nil
}

// l1Coverage is the virtual size l1Size L1 entries address: each points
// at an L2 table of one cluster of 8-byte entries, each entry a cluster.
// It saturates at MaxInt64 rather than overflow.
func l1Coverage(l1Size, clusterBits uint32) int64 {
	shift := 2*uint(clusterBits) - 3 // bytes covered by one L1 entry, as a power of two
	if l1Size == 0 {
		return 0
	}
	if shift+uint(bits.Len32(l1Size)) > 62 {
		return 1<<63 - 1
	}
	return int64(l1Size) << shift
}
