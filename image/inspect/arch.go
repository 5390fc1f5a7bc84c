// Package inspect reads what a disk image or kernel is (a disk at all, its
// format, the architecture it boots) without running it. It links
// go-diskfs, so only the daemon binary (cowork-hostd) imports it.
package inspect

import (
	"bytes"
	"debug/pe"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// ErrArchUnknown means the image carries nothing that tells its
// architecture (a bare filesystem, or a kernel of a kind not known here).
var ErrArchUnknown = errors.New("architecture not recognised")

// DiskArch tells which architecture a raw bootable disk is for, from the
// removable-media loader (EFI/BOOT/BOOT*.EFI) on its EFI system partition.
// A hypervisor given a disk of the other architecture shows only a silent
// firmware prompt; this lets cowork say what is wrong instead. The disk
// is read as raw whatever it holds: an instance's disk is the guest's to
// write, and a qcow2 header it wrote there must not make the host open
// the backing file it names (ImageArch reads the user's images).
func DiskArch(diskPath string) (string, error) {
	d, err := diskfs.Open(diskPath, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return "", fmt.Errorf("open %s: %w", diskPath, err)
	}
	defer d.Close()
	return espArch(diskPath, d)
}

// ImageArch is DiskArch for an image the user gives init: raw, or any
// format go-qcow2reader reads (a qcow2 cloud image, before it is
// converted). A qcow2 naming a backing file is refused, as the
// conversion refuses it (qcow2.CheckStandalone).
func ImageArch(imagePath string) (string, error) {
	d, done, err := openDisk(imagePath)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", imagePath, err)
	}
	defer done()
	return espArch(imagePath, d)
}

// espArch reads the architecture of the loader on d's EFI system
// partition.
func espArch(diskPath string, d *disk.Disk) (string, error) {
	table, err := d.GetPartitionTable()
	if err != nil {
		return "", ErrArchUnknown // no partition table: a bare filesystem
	}
	gt, ok := table.(*gpt.Table)
	if !ok {
		return "", ErrArchUnknown
	}
	for i, p := range gt.Partitions {
		if p.Type != gpt.EFISystemPartition {
			continue
		}
		fs, err := d.GetFilesystem(i + 1)
		if err != nil {
			return "", fmt.Errorf("%s: read the EFI system partition: %w", diskPath, err)
		}
		dir, entries := findDir(fs, "EFI", "BOOT")
		for _, e := range entries {
			name := strings.ToUpper(e.Name())
			if !strings.HasPrefix(name, "BOOT") || !strings.HasSuffix(name, ".EFI") {
				continue
			}
			f, err := fs.OpenFile(path.Join(dir, e.Name()), os.O_RDONLY)
			if err != nil {
				return "", fmt.Errorf("%s: open %s: %w", diskPath, e.Name(), err)
			}
			b, err := io.ReadAll(io.LimitReader(f, 64<<20))
			if err != nil {
				return "", fmt.Errorf("%s: read %s: %w", diskPath, e.Name(), err)
			}
			if arch := peArch(b); arch != "" {
				return arch, nil
			}
		}
	}
	return "", ErrArchUnknown
}

// findDir walks down a FAT filesystem by names in any case (FAT ignores
// case, go-diskfs does not) and lists where it ends.
func findDir(fs interface {
	ReadDir(string) ([]iofs.DirEntry, error)
}, names ...string) (string, []iofs.DirEntry) {
	dir := "."
	entries, err := fs.ReadDir(dir)
	for _, name := range names {
		if err != nil {
			return "", nil
		}
		next := ""
		for _, e := range entries {
			if e.IsDir() && strings.EqualFold(e.Name(), name) {
				next = path.Join(dir, e.Name())
			}
		}
		if next == "" {
			return "", nil
		}
		dir = next
		entries, err = fs.ReadDir(dir)
	}
	if err != nil {
		return "", nil
	}
	return dir, entries
}

// Kernel is what a kernel file's header says.
type Kernel struct {
	Arch string
	// Compressed is an arm64 kernel packed in an EFI zboot or gzip wrapper,
	// which QEMU boots but Virtualization.framework does not: it needs the
	// plain Image.
	Compressed bool
}

// KernelInfo reads a kernel's header: an arm64 Image (magic "ARM\x64" at
// 56), an EFI zboot image ("zimg" at 4, arch from its PE header), an x86
// bzImage ("HdrS" at 0x202), or gzip.
func KernelInfo(kernelPath string) (Kernel, error) {
	f, err := os.Open(kernelPath)
	if err != nil {
		return Kernel{}, err
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Kernel{}, fmt.Errorf("read %s: %w", kernelPath, err)
	}
	head = head[:n]
	at := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic
	}
	switch {
	case at(56, "ARM\x64"):
		return Kernel{Arch: "arm64"}, nil
	case at(0x202, "HdrS"):
		return Kernel{Arch: "amd64"}, nil
	case at(4, "zimg"):
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return Kernel{}, err
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return Kernel{}, fmt.Errorf("read %s: %w", kernelPath, err)
		}
		if arch := peArch(b); arch != "" {
			return Kernel{Arch: arch, Compressed: true}, nil
		}
	case at(0, "\x1f\x8b"):
		return Kernel{Compressed: true}, ErrArchUnknown
	}
	return Kernel{}, ErrArchUnknown
}

// peArch is the GOARCH of a PE (EFI) executable, or "".
func peArch(b []byte) string {
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		return ""
	}
	switch f.Machine {
	case pe.IMAGE_FILE_MACHINE_ARM64:
		return "arm64"
	case pe.IMAGE_FILE_MACHINE_AMD64:
		return "amd64"
	}
	return ""
}
