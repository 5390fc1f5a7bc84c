package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"syscall"
)

// Info is what the header says.
type Info struct {
	Size          int64  // virtual size in bytes
	Backing       string // backing file name as written, "" for none
	BackingFormat string // from the backing-format extension, "" if absent
	// DataFile is the external data file a header extension names ("" for
	// none), and ExternalData the incompatible feature bit that makes QEMU
	// open it: it reads and writes the guest's clusters in that file.
	DataFile     string
	ExternalData bool
	ClusterBits  uint32
}

// Bounds on what ReadInfo will walk in a header it did not write.
const (
	minClusterBits = 9  // 512-byte clusters, the spec's minimum
	maxClusterBits = 21 // 2 MiB, QEMU's implementation limit
	maxExtensions  = 64 // QEMU writes a handful; more is a broken or hostile file
)

// header is the part of a qcow2 header that ReadInfo and Resize use,
// checked against the bounds of the file.
type header struct {
	Info
	version  uint32
	l1Size   uint32
	l1Offset uint64
}

// ReadInfo reads path's header. The file may be hostile (a user or a bug
// may have put anything there): every field is checked against bounds
// before use (magic, version 2 or 3, cluster_bits 9..21, backing name
// offset/len within the first cluster and ≤ 1023 bytes, header extensions
// walked with a bound on count and length, no read beyond the file); a
// malformed file is an error naming what is wrong, never a panic or a
// huge allocation.
func ReadInfo(path string) (*Info, error) {
	// O_NONBLOCK: a fifo named disk.qcow2 must not hang its reader.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("qcow2: %w", err)
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return nil, fmt.Errorf("qcow2: %s: %w", path, err)
	}
	info := h.Info
	return &info, nil
}

// readHeader parses and checks the header in f's first cluster. It reads
// at most one cluster (≤ 2 MiB, after cluster_bits is checked) and never
// beyond the end of the file.
func readHeader(f *os.File) (*header, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fileSize := st.Size()
	be := binary.BigEndian
	var fixed [headerLenV2]byte
	if fileSize < headerLenV2 {
		return nil, fmt.Errorf("file is %d bytes, shorter than a qcow2 header (%d): not a qcow2 image or truncated", fileSize, headerLenV2)
	}
	if _, err := f.ReadAt(fixed[:], 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	if m := be.Uint32(fixed[0:]); m != qcowMagic {
		return nil, fmt.Errorf("magic is %#08x, not qcow2's %#08x: not a qcow2 image", m, qcowMagic)
	}
	h := &header{version: be.Uint32(fixed[4:])}
	if h.version != 2 && h.version != 3 {
		return nil, fmt.Errorf("qcow2 version %d is not supported (want 2 or 3)", h.version)
	}
	h.ClusterBits = be.Uint32(fixed[20:])
	if h.ClusterBits < minClusterBits || h.ClusterBits > maxClusterBits {
		return nil, fmt.Errorf("cluster_bits %d is outside %d..%d", h.ClusterBits, minClusterBits, maxClusterBits)
	}
	clusterLen := int64(1) << h.ClusterBits
	size := be.Uint64(fixed[sizeOffset:])
	if size > math.MaxInt64 {
		return nil, fmt.Errorf("virtual size %d is too large", size)
	}
	h.Size = int64(size)
	h.l1Size = be.Uint32(fixed[36:])
	h.l1Offset = be.Uint64(fixed[40:])

	// Everything else ReadInfo needs lies in the first cluster; read it,
	// or as much of it as the file has.
	n := min(clusterLen, fileSize)
	c0 := make([]byte, n)
	if _, err := f.ReadAt(c0, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read first cluster: %w", err)
	}

	hdrLen := int64(headerLenV2)
	if h.version == 3 {
		if n < headerLenV3 {
			return nil, fmt.Errorf("file is %d bytes, shorter than a qcow2 v3 header (%d): truncated", n, headerLenV3)
		}
		hdrLen = int64(be.Uint32(c0[100:]))
		if hdrLen < headerLenV3 || hdrLen%8 != 0 || hdrLen > clusterLen {
			return nil, fmt.Errorf("header_length %d is not a multiple of 8 in %d..%d", hdrLen, headerLenV3, clusterLen)
		}
		h.ExternalData = be.Uint64(c0[72:])&incompatDataFile != 0
		if ro := be.Uint32(c0[96:]); ro > 6 {
			return nil, fmt.Errorf("refcount_order %d is above 6", ro)
		}
	}

	// Header extensions run from the end of the header to the backing
	// file name, or to the end of the first cluster if there is none.
	nameOff := be.Uint64(c0[8:])
	nameLen := uint64(be.Uint32(c0[16:]))
	extLimit := clusterLen
	if nameOff != 0 {
		if nameLen > maxBackingNameLen {
			return nil, fmt.Errorf("backing file name is %d bytes, above the limit of %d", nameLen, maxBackingNameLen)
		}
		if nameOff < uint64(hdrLen) {
			return nil, fmt.Errorf("backing file name at offset %d overlaps the %d-byte header", nameOff, hdrLen)
		}
		// nameOff is checked alone first: a huge one would wrap the sum.
		if nameOff > uint64(clusterLen) || nameOff+nameLen > uint64(clusterLen) {
			return nil, fmt.Errorf("backing file name at offset %d, %d bytes, runs past the first cluster (%d bytes)", nameOff, nameLen, clusterLen)
		}
		if nameOff+nameLen > uint64(n) {
			return nil, fmt.Errorf("backing file name at offset %d, %d bytes, runs past the end of the file (%d bytes): truncated", nameOff, nameLen, n)
		}
		h.Backing = string(c0[nameOff : nameOff+nameLen])
		extLimit = int64(nameOff)
	}
	if err := h.readExtensions(c0, hdrLen, min(extLimit, n)); err != nil {
		return nil, err
	}
	return h, nil
}

// readExtensions walks the header extensions in c0[start:end]: each is a
// 4-byte type, a 4-byte length and the data padded to 8 bytes; type 0
// ends the list. A length running past end, more than maxExtensions
// entries or a missing end marker is an error.
func (h *header) readExtensions(c0 []byte, start, end int64) error {
	be := binary.BigEndian
	off := start
	for i := 0; ; i++ {
		if i >= maxExtensions {
			return fmt.Errorf("more than %d header extensions: the list has no end", maxExtensions)
		}
		if off+8 > end {
			return fmt.Errorf("header extension %d at offset %d: the list runs past %d without an end marker", i, off, end)
		}
		typ := be.Uint32(c0[off:])
		length := int64(be.Uint32(c0[off+4:]))
		if typ == extEnd {
			return nil
		}
		data := off + 8
		if length > end-data {
			return fmt.Errorf("header extension %d (type %#08x) is %d bytes, past the end of its area at %d", i, typ, length, end)
		}
		if typ == extBackingFormat {
			if h.BackingFormat != "" {
				return fmt.Errorf("header extension %d: a second backing format", i)
			}
			if length == 0 || length > maxBackingFormatSz {
				return fmt.Errorf("header extension %d: backing format name is %d bytes, want 1..%d", i, length, maxBackingFormatSz)
			}
			h.BackingFormat = string(c0[data : data+length])
		}
		if typ == extDataFile {
			if length == 0 || length > maxBackingNameLen {
				return fmt.Errorf("header extension %d: data file name is %d bytes, want 1..%d", i, length, maxBackingNameLen)
			}
			h.DataFile = string(c0[data : data+length])
		}
		off = data + int64(pad8(int(length)))
	}
}
