package inspect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/lima-vm/go-qcow2reader"
	"github.com/lima-vm/go-qcow2reader/image/raw"

	"github.com/coworkhq/cowork/image/qcow2"
)

// NotDiskError is a file given as a disk image that is none: no image
// format's header, no partition table, no file system.
type NotDiskError struct {
	Path string
	What string // what it looks like instead, when known
}

func (e *NotDiskError) Error() string {
	if e.What != "" {
		return fmt.Sprintf("%s is not a disk image but %s", e.Path, e.What)
	}
	return fmt.Sprintf("%s is not a disk image: it has no qcow2 (or other image) header, no partition table and no file system; give a qcow2 or raw disk image", e.Path)
}

// CheckDisk tells whether path holds a disk image cowork can boot from,
// reading its first blocks only: an image format go-qcow2reader knows
// (qcow2, vmdk, vhdx, ...), or a raw disk with a partition table (MBR or
// GPT) or a file system (ext2/3/4, XFS, Btrfs, ISO 9660) at its start. It
// returns the image's format. Anything else (a text file, an archive, a
// disk of zeros) is a *NotDiskError, found before any long conversion.
func CheckDisk(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return "", err
	} else if st.IsDir() {
		return "", &NotDiskError{Path: path, What: "a directory"}
	} else if st.Size() == 0 {
		return "", &NotDiskError{Path: path, What: "an empty file"}
	}
	if err := qcow2.CheckStandalone(path); err != nil {
		return "", err
	}
	img, err := qcow2reader.Open(f)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", path, err)
	}
	defer img.Close()
	if img.Type() != raw.Type {
		return string(img.Type()), nil
	}
	head := make([]byte, headBytes)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	head = head[:n]
	if hasDiskSignature(head) {
		return "raw", nil
	}
	return "", &NotDiskError{Path: path, What: packedAs(head)}
}

// headBytes is how much of a raw image CheckDisk reads: enough to reach
// the Btrfs superblock at 64 KiB.
const headBytes = 0x10040 + 8

// hasDiskSignature finds a partition table or a file system's magic in
// the start of a raw disk.
func hasDiskSignature(b []byte) bool {
	at := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	switch {
	case at(510, "\x55\xaa"): // an MBR, GPT's protective MBR, or a FAT boot sector
		return true
	case at(512, "EFI PART"), at(4096, "EFI PART"): // GPT, 512 or 4096-byte sectors
		return true
	case len(b) >= 1082 && binary.LittleEndian.Uint16(b[1080:]) == 0xef53: // ext2/3/4
		return true
	case at(0, "XFSB"), at(0x10040, "_BHRfS_M"), at(0x8001, "CD001"):
		return true
	}
	return false
}

// packedAs names what a file that is not a disk seems to be, with what to
// do, or "" when it is nothing known.
func packedAs(b []byte) string {
	for _, p := range []struct{ magic, what string }{
		{"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"},
		{"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz)"},
		{"\x28\xb5\x2f\xfd", "zstd-compressed: decompress it first (unzstd)"},
		{"BZh", "bzip2-compressed: decompress it first (bunzip2)"},
		{"PK\x03\x04", "a zip archive: unpack the disk image from it first"},
	} {
		if bytes.HasPrefix(b, []byte(p.magic)) {
			return p.what
		}
	}
	if len(b) > 262 && string(b[257:262]) == "ustar" {
		return "a tar archive: unpack the disk image from it first"
	}
	return ""
}

// openDisk opens any image go-qcow2reader reads (raw, qcow2, ...) as a
// read-only disk, so that its partitions can be read without converting
// it first.
func openDisk(path string) (*disk.Disk, func(), error) {
	if err := qcow2.CheckStandalone(path); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	img, err := qcow2reader.Open(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("image %s: %w", path, err)
	}
	done := func() { img.Close(); f.Close() }
	if err := img.Readable(); err != nil {
		done()
		return nil, nil, fmt.Errorf("image %s (%s) cannot be read: %w", path, img.Type(), err)
	}
	d, err := diskfs.OpenBackend(&virtualDisk{SectionReader: io.NewSectionReader(img, 0, img.Size()), name: filepath.Base(path)}, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		done()
		return nil, nil, err
	}
	return d, done, nil
}

// virtualDisk is an image's virtual disk as go-diskfs storage, read-only.
type virtualDisk struct {
	*io.SectionReader
	name string
}

var _ backend.Storage = (*virtualDisk)(nil)

func (v *virtualDisk) Stat() (fs.FileInfo, error) { return diskInfo{v.name, v.Size()}, nil }
func (v *virtualDisk) Close() error               { return nil }
func (v *virtualDisk) Sys() (*os.File, error)     { return nil, backend.ErrNotSuitable }
func (v *virtualDisk) Writable() (backend.WritableFile, error) {
	return nil, backend.ErrIncorrectOpenMode
}
func (v *virtualDisk) Path() string { return "" }

// diskInfo is a virtual disk's file info: a regular file of its size.
type diskInfo struct {
	name string
	size int64
}

func (i diskInfo) Name() string       { return i.name }
func (i diskInfo) Size() int64        { return i.size }
func (i diskInfo) Mode() fs.FileMode  { return 0o400 }
func (i diskInfo) ModTime() time.Time { return time.Time{} }
func (i diskInfo) IsDir() bool        { return false }
func (i diskInfo) Sys() any           { return nil }
