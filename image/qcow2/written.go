package qcow2

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
)

// Bits of L1 and L2 table entries (docs/interop/qcow2.txt).
const (
	l1OffsetMask = 0x00fffffffffffe00 // an L1 entry's L2 table offset
	l2Copied     = 1 << 63            // "refcount is one": not part of the mapping
	maxL1Entries = 1 << 22            // 32 MiB of L1 table, 2^22 L2 tables: far above any disk cowork makes
)

// Written is how much of the virtual disk the image at path maps itself
// rather than reading through to its backing file: the guest clusters
// its L2 tables map (to data, compressed data, or as zeros), times the
// cluster size. An overlay just made by CreateOverlay has written 0; one
// the guest wrote to has its changes there, which dropping the overlay
// would lose. Its own metadata (header, tables) is not counted.
//
// The image may be hostile: the L1 table and every L2 table must lie in
// the file, the L1 table within maxL1Entries, and no two L1 entries may
// name one L2 table (QEMU never shares them in the active table), so that
// what Written reads is bounded by the file's size; reads are one table
// at a time.
func Written(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0, fmt.Errorf("qcow2: %w", err)
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return 0, fmt.Errorf("qcow2: %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	fileSize := uint64(st.Size())
	clusterLen := uint64(1) << h.ClusterBits
	if h.l1Size > maxL1Entries {
		return 0, fmt.Errorf("qcow2: %s: L1 table of %d entries, above the limit of %d", path, h.l1Size, maxL1Entries)
	}
	if h.l1Size == 0 {
		return 0, nil
	}
	l1Len := uint64(h.l1Size) * 8
	if h.l1Offset%clusterLen != 0 || h.l1Offset > fileSize || l1Len > fileSize-h.l1Offset {
		return 0, fmt.Errorf("qcow2: %s: L1 table at %d, %d bytes, is not in the %d-byte file", path, h.l1Offset, l1Len, fileSize)
	}
	l1 := make([]byte, l1Len)
	if _, err := f.ReadAt(l1, int64(h.l1Offset)); err != nil {
		return 0, fmt.Errorf("qcow2: %s: read L1 table: %w", path, err)
	}
	be := binary.BigEndian
	l2 := make([]byte, clusterLen)
	var mapped int64
	seen := map[uint64]bool{}
	for i := uint64(0); i < l1Len; i += 8 {
		off := be.Uint64(l1[i:]) & l1OffsetMask
		if off == 0 {
			continue
		}
		if seen[off] {
			return 0, fmt.Errorf("qcow2: %s: two L1 entries name the L2 table at %d: not an image QEMU wrote", path, off)
		}
		seen[off] = true
		if off%clusterLen != 0 || off > fileSize || clusterLen > fileSize-off {
			return 0, fmt.Errorf("qcow2: %s: L2 table at %d is not in the %d-byte file", path, off, fileSize)
		}
		if _, err := f.ReadAt(l2, int64(off)); err != nil {
			return 0, fmt.Errorf("qcow2: %s: read L2 table: %w", path, err)
		}
		for j := uint64(0); j < clusterLen; j += 8 {
			if be.Uint64(l2[j:])&^l2Copied != 0 {
				mapped++
			}
		}
	}
	return mapped << h.ClusterBits, nil
}
