package inspect

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// toQcow2 converts a raw disk with qemu-img, as cloud images come.
func toQcow2(t *testing.T, raw string) string {
	t.Helper()
	qemuImg := needTool(t, "qemu-img")
	q := raw + ".qcow2"
	if out, err := exec.Command(qemuImg, "convert", "-O", "qcow2", raw, q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	return q
}

// A qcow2 cloud image tells its architecture before it is converted, so
// that init can pick the guest's.
func TestImageArchOfAQcow2Image(t *testing.T) {
	for name, want := range map[string]string{"BOOTAA64.EFI": "arm64", "BOOTX64.EFI": "amd64"} {
		machine := map[string]uint16{"arm64": 0xaa64, "amd64": 0x8664}[want]
		got, err := ImageArch(toQcow2(t, espDisk(t, name, peHeader(machine, nil))))
		if err != nil || got != want {
			t.Errorf("%s in a qcow2: got %q, %v; want %s", name, got, err, want)
		}
	}
}

// An instance's disk is the guest's to write. A guest that writes a
// qcow2 header naming a backing file onto it must not make the host open
// that file when it reads the disk's architecture (vz does, at every
// start): DiskArch reads the disk as the raw disk it is.
func TestDiskArchReadsTheGuestsDiskAsRaw(t *testing.T) {
	qemuImg := needTool(t, "qemu-img")
	hostFile := espDisk(t, "BOOTAA64.EFI", peHeader(0xaa64, nil)) // a host file that would answer arm64
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if out, err := exec.Command(qemuImg, "create", "-f", "qcow2", "-F", "raw", "-b", hostFile, disk, "40M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	if got, err := DiskArch(disk); !errors.Is(err, ErrArchUnknown) {
		t.Errorf("DiskArch of a disk holding a qcow2 header: %q, %v; it followed the backing file", got, err)
	}
	// An image given to init never gets its backing file opened either
	// (image/backing_test.go): a downloaded one could name any host file.
	if got, err := ImageArch(disk); err == nil || !strings.Contains(err.Error(), "overlay on another file") {
		t.Errorf("ImageArch of a qcow2 with a backing file: %q, %v; want it refused", got, err)
	}
}

// What init takes as a disk image: an image format, or a raw disk with a
// partition table or a file system. Anything else is refused at once,
// with what it is when that is known.
func TestCheckDisk(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int, at map[int]string) string {
		b := make([]byte, size)
		for off, s := range at {
			copy(b[off:], s)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ext4 := make([]byte, 2)
	binary.LittleEndian.PutUint16(ext4, 0xef53)
	gpt := espDisk(t, "BOOTX64.EFI", peHeader(0x8664, nil))
	for _, c := range []struct {
		path, format, notDisk string
	}{
		{gpt, "raw", ""},
		{toQcow2(t, gpt), "qcow2", ""},
		{write("rootfs.ext4", 4096, map[int]string{1080: string(ext4)}), "raw", ""},
		{write("mbr.img", 4096, map[int]string{510: "\x55\xaa"}), "raw", ""},
		{write("xfs.img", 4096, map[int]string{0: "XFSB"}), "raw", ""},
		{write("cd.iso", 0x9000, map[int]string{0x8001: "CD001"}), "raw", ""},
		{write("notes.txt", 100, map[int]string{0: "some notes, not a disk"}), "", "no partition table and no file system"},
		{write("zeros.raw", 1<<20, nil), "", "no partition table and no file system"},
		{write("empty.raw", 0, nil), "", "an empty file"},
		{write("disk.raw.xz", 4096, map[int]string{0: "\xfd7zXZ\x00"}), "", "xz-compressed: decompress it first (unxz)"},
		{write("disk.tar", 4096, map[int]string{257: "ustar"}), "", "a tar archive"},
		{dir, "", "a directory"},
	} {
		format, err := CheckDisk(c.path)
		var nd *NotDiskError
		switch {
		case c.notDisk == "" && (err != nil || format != c.format):
			t.Errorf("%s: %q, %v; want %s", filepath.Base(c.path), format, err, c.format)
		case c.notDisk != "" && (!errors.As(err, &nd) || !strings.Contains(err.Error(), c.notDisk) || !strings.Contains(err.Error(), c.path)):
			t.Errorf("%s: %q, %v; want a refusal saying %q", filepath.Base(c.path), format, err, c.notDisk)
		}
	}
}

// needTool finds a program the test compares against; `make test`
// installs it and sets COWORK_TEST_REQUIRE_TOOLS, so only a bare
// `go test` skips.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s not installed (make test installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}
