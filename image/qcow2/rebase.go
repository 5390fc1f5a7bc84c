package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Rebase points the qcow2 v3 image at path at another backing file of the
// given format (an absolute path), keeping every cluster it holds: what
// `qemu-img rebase -u` does, for a copy of a snapshot layer whose backing
// file was copied too (a clone's chain, in its own folder). The header,
// its extensions and the backing file's name all live in the image's
// first cluster, which QEMU reserves for them; Rebase rewrites that
// cluster as QEMU's own header update does: the header as it was, the
// backing format extension, the other extensions as they were, the end
// marker, the new name. An image with an external data file, a v2 image,
// or one whose new header would not fit its first cluster is refused,
// the file untouched.
func Rebase(path, backing, format string) error {
	if !filepath.IsAbs(backing) {
		return fmt.Errorf("qcow2: rebase %s: backing file %q is not an absolute path", path, backing)
	}
	if format != FormatRaw && format != FormatQcow2 {
		return fmt.Errorf("qcow2: rebase %s: backing format %q, want raw or qcow2", path, format)
	}
	if len(backing) > maxBackingNameLen {
		return fmt.Errorf("qcow2: rebase %s: backing file name is %d bytes, above the limit of %d", path, len(backing), maxBackingNameLen)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return fmt.Errorf("qcow2: %s: %w", path, err)
	}
	switch {
	case h.version != 3:
		return fmt.Errorf("qcow2: rebase %s: a version %d image; only v3 is rebased", path, h.version)
	case h.ExternalData || h.DataFile != "":
		return fmt.Errorf("qcow2: rebase %s: it keeps its data in another file", path)
	}
	clusterLen := int64(1) << h.ClusterBits
	c0 := make([]byte, clusterLen)
	if _, err := f.ReadAt(c0, 0); err != nil {
		return fmt.Errorf("qcow2: rebase %s: read its first cluster: %w", path, err)
	}
	out, err := rebasedCluster(c0, backing, format)
	if err != nil {
		return fmt.Errorf("qcow2: rebase %s: %w", path, err)
	}
	if _, err := f.WriteAt(out, 0); err != nil {
		return fmt.Errorf("qcow2: rebase %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qcow2: rebase %s: sync: %w", path, err)
	}
	return f.Close()
}

// rebasedCluster is the first cluster c0 (checked by readHeader) with its
// backing file set to backing, in format.
func rebasedCluster(c0 []byte, backing, format string) ([]byte, error) {
	be := binary.BigEndian
	hdrLen := int(be.Uint32(c0[100:]))
	end := len(c0)
	if off := be.Uint64(c0[8:]); off != 0 {
		end = int(off)
	}
	// The extensions to keep, whole (type, length, padded data).
	var kept []byte
	off := hdrLen
	for i := 0; ; i++ {
		if i >= maxExtensions || off+8 > end {
			return nil, errors.New("its header extensions have no end marker")
		}
		typ := be.Uint32(c0[off:])
		n := 8 + pad8(int(be.Uint32(c0[off+4:])))
		if typ == extEnd {
			break
		}
		if off+n > end {
			return nil, fmt.Errorf("header extension %d runs past its area", i)
		}
		if typ != extBackingFormat {
			kept = append(kept, c0[off:off+n]...)
		}
		off += n
	}
	out := make([]byte, len(c0))
	copy(out, c0[:hdrLen])
	at := hdrLen
	be.PutUint32(out[at:], extBackingFormat)
	be.PutUint32(out[at+4:], uint32(len(format)))
	copy(out[at+8:], format)
	at += 8 + pad8(len(format))
	if at+len(kept)+8+len(backing) > len(out) {
		return nil, errors.New("the new header does not fit its first cluster")
	}
	at += copy(out[at:], kept)
	be.PutUint32(out[at:], extEnd) // and a zero length
	at += 8
	copy(out[at:], backing)
	be.PutUint64(out[8:], uint64(at))
	be.PutUint32(out[16:], uint32(len(backing)))
	return out, nil
}
