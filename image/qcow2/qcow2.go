// Package qcow2 creates and inspects qcow2 v3 overlay images on a raw
// backing file, in pure Go.
//
// An instance's disk is a thin overlay whose backing file is a read-only
// raw "golden" disk shared by every instance made from the same image:
// creating one costs four clusters instead of a copy of the disk, which
// matters on filesystems without reflink (ext4). QEMU opens the overlay
// with format=qcow2 and follows the backing file named in its header.
// cowork does not run qemu-img at run time (it is not installed on macOS
// hosts, and a child process per disk costs more than writing 256 KiB),
// and go-qcow2reader only reads, so the few fields an empty overlay needs
// are written here, following QEMU's docs/interop/qcow2.txt.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coworkhq/cowork/internal/dirsync"
)

// The layout of an overlay made by CreateOverlay: four clusters of 64 KiB.
//
//	cluster 0: header, header extensions (backing format, end), backing name
//	cluster 1: refcount table, one entry: cluster 2
//	cluster 2: refcount block, 16-bit refcounts: 1 for clusters 0..3
//	cluster 3: L1 table, 8192 zero entries (nothing allocated yet)
//
// QEMU appends L2 tables and data clusters after these as the guest
// writes, and grows the refcount structures itself when it needs to.
const (
	clusterBits   = 16
	clusterSize   = 1 << clusterBits
	l1Entries     = clusterSize / 8 // one cluster of 8-byte entries
	refcountOrder = 4               // 16-bit refcounts, QEMU's default
	headerLenV3   = 104             // v3 header up to and including header_length
	headerLenV2   = 72

	refcountTableOffset = 1 * clusterSize
	refcountBlockOffset = 2 * clusterSize
	l1TableOffset       = 3 * clusterSize
	overlayClusters     = 4

	qcowMagic          = 0x514649fb // "QFI\xfb"
	extEnd             = 0x00000000
	extBackingFormat   = 0xE2792ACA
	extDataFile        = 0x44415441 // "DATA": the external data file's name
	incompatDataFile   = 1 << 2     // incompatible_features: external data file
	maxBackingNameLen  = 1023       // the spec's limit on backing_file_size
	sizeOffset         = 24         // header field `size`
	sectorSize         = 512
	maxBackingFormatSz = 16 // QEMU refuses a longer backing format name
)

// MaxSize is the largest virtual size an overlay made here can take: its
// L1 table is one 64 KiB cluster (8192 entries × 512 MiB) = 4 TiB. The L1
// table is made that large up front so that Resize only has to rewrite
// the size field, never move or grow a table.
const MaxSize int64 = 4 << 40

// CreateOverlay writes a new, empty qcow2 v3 image at path with backing
// file `backing` (an absolute path; format raw, recorded in the
// backing-format header extension) and virtual size `size` (> 0, a
// multiple of 512, ≤ MaxSize; and not below the backing file's size:
// error otherwise). It writes path+".tmp" (mode 0600), fsyncs, and renames
// it over path only when complete; on error nothing is left at path or
// path.tmp. Refuses a path that exists.
//
// The backing path is absolute so that the overlay stays valid wherever
// the instance directory is moved or opened from, and so that QEMU never
// reads it as a protocol prefix ("nbd:", "json:"); the format is recorded
// so that QEMU never probes the golden disk's content for a format (a raw
// disk whose first sector a guest wrote to look like a qcow2 header would
// otherwise be read as one).
func CreateOverlay(path, backing string, size int64) error {
	return CreateOverlayOn(path, backing, FormatRaw, size)
}

// Backing file formats CreateOverlayOn records.
const (
	FormatRaw   = "raw"
	FormatQcow2 = "qcow2"
)

// CreateOverlayOn is CreateOverlay on a backing file of format (FormatRaw
// or FormatQcow2: a snapshot layer that is itself an overlay). A qcow2
// backing file must really be one (its header is read and checked), and
// its virtual size, not its file size, is the floor for size.
func CreateOverlayOn(path, backing, format string, size int64) error {
	if err := checkSize(size); err != nil {
		return fmt.Errorf("qcow2: create %s: %w", path, err)
	}
	if format != FormatRaw && format != FormatQcow2 {
		return fmt.Errorf("qcow2: create %s: backing format %q: want raw or qcow2", path, format)
	}
	if !filepath.IsAbs(backing) {
		return fmt.Errorf("qcow2: create %s: backing file %q is not an absolute path; pass it through filepath.Abs", path, backing)
	}
	if len(backing) > maxBackingNameLen {
		return fmt.Errorf("qcow2: create %s: backing file path is %d bytes, qcow2 allows at most %d; use a shorter COWORK_HOME", path, len(backing), maxBackingNameLen)
	}
	st, err := os.Stat(backing)
	if err != nil {
		return fmt.Errorf("qcow2: create %s: backing file: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("qcow2: create %s: backing file %s is not a regular file (%s)", path, backing, st.Mode().Type())
	}
	backingSize := st.Size()
	if format == FormatQcow2 {
		info, err := ReadInfo(backing)
		if err != nil {
			return fmt.Errorf("qcow2: create %s: backing file: %w", path, err)
		}
		backingSize = info.Size
	}
	if backingSize > size {
		return fmt.Errorf("qcow2: create %s: virtual size %d is below the backing file's size %d; the overlay would cut the backing disk short, so use a size of at least %d", path, size, backingSize, backingSize)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("qcow2: create %s: the file exists; remove it first if it is no longer wanted", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("qcow2: create %s: %w", path, err)
	}
	return writeAtomically(path, overlayBytes(backing, format, size))
}

// checkSize reports why size cannot be an overlay's virtual size.
func checkSize(size int64) error {
	switch {
	case size <= 0:
		return fmt.Errorf("virtual size %d is not positive", size)
	case size%sectorSize != 0:
		return fmt.Errorf("virtual size %d is not a multiple of %d; round it up to %d", size, sectorSize, (size/sectorSize+1)*sectorSize)
	case size > MaxSize:
		return fmt.Errorf("virtual size %d is above the limit of %d (4 TiB)", size, MaxSize)
	}
	return nil
}

// overlayBytes is the whole image file: the four clusters described above.
func overlayBytes(backing, format string, size int64) []byte {
	b := make([]byte, overlayClusters*clusterSize)
	be := binary.BigEndian

	// Header extensions start right after the header; the backing file
	// name follows them in the rest of cluster 0, as the spec asks.
	ext := b[headerLenV3:]
	be.PutUint32(ext[0:], extBackingFormat)
	be.PutUint32(ext[4:], uint32(len(format)))
	copy(ext[8:], format)
	endExt := 8 + pad8(len(format))
	be.PutUint32(ext[endExt:], extEnd) // the end marker: type 0, length 0
	nameOffset := headerLenV3 + endExt + 8
	copy(b[nameOffset:], backing)

	h := b[:headerLenV3]
	be.PutUint32(h[0:], qcowMagic)
	be.PutUint32(h[4:], 3)                     // version
	be.PutUint64(h[8:], uint64(nameOffset))    // backing_file_offset
	be.PutUint32(h[16:], uint32(len(backing))) // backing_file_size
	be.PutUint32(h[20:], clusterBits)          // cluster_bits
	be.PutUint64(h[sizeOffset:], uint64(size)) // size
	be.PutUint32(h[32:], 0)                    // crypt_method: none
	be.PutUint32(h[36:], l1Entries)            // l1_size
	be.PutUint64(h[40:], l1TableOffset)        // l1_table_offset
	be.PutUint64(h[48:], refcountTableOffset)  // refcount_table_offset
	be.PutUint32(h[56:], 1)                    // refcount_table_clusters
	be.PutUint32(h[60:], 0)                    // nb_snapshots
	be.PutUint64(h[64:], 0)                    // snapshots_offset
	be.PutUint64(h[72:], 0)                    // incompatible_features
	be.PutUint64(h[80:], 0)                    // compatible_features
	be.PutUint64(h[88:], 0)                    // autoclear_features
	be.PutUint32(h[96:], refcountOrder)        // refcount_order
	be.PutUint32(h[100:], headerLenV3)         // header_length

	// The refcount table's one entry points at the one refcount block,
	// which counts one reference for each of the four clusters in use.
	be.PutUint64(b[refcountTableOffset:], refcountBlockOffset)
	for i := 0; i < overlayClusters; i++ {
		be.PutUint16(b[refcountBlockOffset+2*i:], 1)
	}
	// Cluster 3, the L1 table, stays zero: no L2 table, so every read
	// falls through to the backing file.
	return b
}

// pad8 rounds n up to a multiple of 8, the alignment of header extensions.
func pad8(n int) int { return (n + 7) &^ 7 }

// writeAtomically writes data to path.tmp, syncs it and renames it to
// path, so that a crash never leaves a half-written image under the name
// QEMU will open. path.tmp is made with O_EXCL: one left by another
// writer is not ours to remove.
func writeAtomically(path string, data []byte) (err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("qcow2: create %s: %w (a stale %s from an interrupted run can be removed)", path, err, filepath.Base(tmp))
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("qcow2: create %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qcow2: create %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("qcow2: create %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("qcow2: create %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename durable. Best effort: some filesystems refuse to
// sync a directory, and the image itself is already on disk.
func syncDir(dir string) { _ = dirsync.Sync(dir) }
