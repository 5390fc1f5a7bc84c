package inspect

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// peHeader is the smallest PE file debug/pe reads: a DOS stub pointing at
// "PE\0\0" and a file header naming the machine.
func peHeader(machine uint16, dos []byte) []byte {
	b := make([]byte, 512)
	copy(b, dos)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x44:], machine)
	return b
}

// espDisk makes a GPT disk whose EFI system partition holds EFI/BOOT/NAME.
func espDisk(t *testing.T, name string, loader []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	d, err := diskfs.Create(p, 40<<20, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, Size: 36 << 20, Type: gpt.EFISystemPartition, Name: "ESP"},
	}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Mkdir("/EFI/BOOT"); err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("/EFI/BOOT/"+name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(loader); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func TestDiskArchFromTheEFILoader(t *testing.T) {
	for _, c := range []struct {
		name    string
		machine uint16
		want    string
	}{
		{"BOOTAA64.EFI", 0xaa64, "arm64"},
		{"BOOTX64.EFI", 0x8664, "amd64"},
	} {
		got, err := DiskArch(espDisk(t, c.name, peHeader(c.machine, nil)))
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %s", c.name, got, err, c.want)
		}
	}
	// A loader that is not a PE file, and a disk with no partitions, say nothing.
	if got, err := DiskArch(espDisk(t, "BOOTAA64.EFI", []byte("not a PE file"))); !errors.Is(err, ErrArchUnknown) {
		t.Errorf("garbage loader: %q, %v", got, err)
	}
	bare := filepath.Join(t.TempDir(), "bare.raw")
	os.WriteFile(bare, make([]byte, 1<<20), 0o600)
	if got, err := DiskArch(bare); !errors.Is(err, ErrArchUnknown) {
		t.Errorf("bare disk: %q, %v", got, err)
	}
}

func TestKernelInfo(t *testing.T) {
	arm64Image := make([]byte, 128)
	copy(arm64Image[56:], "ARM\x64")
	bzImage := make([]byte, 1024)
	copy(bzImage[0x202:], "HdrS")
	zboot := peHeader(0xaa64, []byte("MZ\x00\x00zimg"))
	for _, c := range []struct {
		name string
		data []byte
		want Kernel
		err  error
	}{
		{"Image", arm64Image, Kernel{Arch: "arm64"}, nil},
		{"bzImage", bzImage, Kernel{Arch: "amd64"}, nil},
		{"zboot", zboot, Kernel{Arch: "arm64", Compressed: true}, nil},
		{"gzip", []byte("\x1f\x8b\x08\x00rest"), Kernel{Compressed: true}, ErrArchUnknown},
		{"text", []byte("hello"), Kernel{}, ErrArchUnknown},
	} {
		p := filepath.Join(t.TempDir(), c.name)
		os.WriteFile(p, c.data, 0o600)
		got, err := KernelInfo(p)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%s: got %+v, %v; want %+v, %v", c.name, got, err, c.want, c.err)
		}
	}
}
