package initcmd

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// kernelFor writes a kernel file whose header says arch.
func kernelFor(t *testing.T, dir, arch string) string {
	t.Helper()
	b := make([]byte, 4096)
	if arch == "arm64" {
		copy(b[56:], "ARM\x64") // an arm64 Image
	} else {
		copy(b[0x202:], "HdrS") // an x86 bzImage
	}
	p := filepath.Join(dir, "vmlinuz-"+arch)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// efiImageFor writes a GPT disk whose EFI system partition boots arch.
func efiImageFor(t *testing.T, dir, arch string) string {
	t.Helper()
	p := filepath.Join(dir, arch+".raw")
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
	name, machine := "BOOTX64.EFI", uint16(0x8664)
	if arch == "arm64" {
		name, machine = "BOOTAA64.EFI", 0xaa64
	}
	pe := make([]byte, 512) // the smallest PE header debug/pe reads
	copy(pe, "MZ")
	binary.LittleEndian.PutUint32(pe[0x3c:], 0x40)
	copy(pe[0x40:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(pe[0x44:], machine)
	f, err := fs.OpenFile("/EFI/BOOT/"+name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(pe)
	f.Close()
	return p
}

// Without --arch the guest is what its kernel, or else its image, is
// built for: on either kind of host one of the two differs from the
// host's own, which init used to pick (and then ask for the wrong QEMU).
// A --arch that contradicts them is a usage error naming the right one.
func TestInitPicksTheArchTheGuestIsBuiltFor(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.raw")
	diskImage(t, img) // a disk that does not tell
	for _, arch := range []string{"arm64", "amd64"} {
		kernel := kernelFor(t, dir, arch)
		c, _, err := parse(t, "--workspace", dir, "--image", img, "--kernel", kernel).Config()
		if err != nil || c.Arch != arch {
			t.Errorf("--kernel built for %s: arch %v, %v", arch, c, err)
		}
		c, _, err = parse(t, "--workspace", dir, "--image", efiImageFor(t, dir, arch)).Config()
		if err != nil || c.Arch != arch {
			t.Errorf("--image built for %s: arch %v, %v", arch, c, err)
		}
		other := map[string]string{"arm64": "amd64", "amd64": "arm64"}[arch]
		_, _, err = parse(t, "--workspace", dir, "--image", img, "--kernel", kernel, "--arch", other).Config()
		if !errors.As(err, new(*cmdutil.FlagError)) || !strings.Contains(err.Error(), "is built for "+arch+"; pass --arch "+arch) {
			t.Errorf("--arch %s with a kernel built for %s: %v", other, arch, err)
		}
	}
	c, _, err := parse(t, "--workspace", dir, "--image", img).Config()
	if err != nil || c.Arch != instance.HostArch() {
		t.Errorf("an image that does not tell: %v, %v; want this machine's arch", c, err)
	}
}

// startRun runs `cowork init args...` to its end.
func startRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, _, errOut := iostreams.Test()
	o := parse(t, args...)
	o.IO = ios
	err := run(context.Background(), o)
	return errOut.String(), err
}

// Arguments are all checked before anything long runs (the conversion of
// a 2 GiB image, a download): a file that is no disk image, a workspace
// that cannot be a folder, an impossible --timeout. Each is a one-line
// usage error, and no instance is left.
func TestInitRefusesBadArgumentsBeforeItStarts(t *testing.T) {
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	img := filepath.Join(home, "img.raw")
	diskImage(t, img)
	notes := filepath.Join(home, "notes.txt")
	os.WriteFile(notes, []byte("not a disk\n"), 0o600)
	file := filepath.Join(home, "a-file")
	os.WriteFile(file, nil, 0o600)
	base := []string{"--memory", "256MiB", "--disk", "1GiB", "--no-start"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--image", notes, "--workspace", filepath.Join(home, "ws")}, "--image: " + notes + " is not a disk image"},
		{[]string{"--image", img, "--workspace", file}, "--workspace " + file + " is a file, not a folder"},
		{[]string{"--image", img, "--workspace", filepath.Join(file, "ws")}, "cannot be made: " + file + " is a file"},
		{[]string{"--image", img, "--workspace", filepath.Dir(home)}, "--workspace " + filepath.Dir(home) + ": the folder holds cowork's own folder"},
		{[]string{"--image", img, "--workspace", filepath.Join(home, "ws"), "--timeout", "-5m"}, "--timeout -5m0s: want a positive duration"},
		{[]string{"--image", img, "--workspace", filepath.Join(home, "ws"), "--timeout", "0"}, "--timeout 0s: want a positive duration"},
		{[]string{"--image", img, "--workspace", filepath.Join(home, "ws"), "--upstream-proxy", "ftp://u:s3cret@proxy:21"}, "upstream proxy ftp://xxxxx@proxy:21: scheme \"ftp\" is not http or socks5"},
	} {
		errOut, err := startRun(t, append(base, c.args...)...)
		if !errors.As(err, new(*cmdutil.FlagError)) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v; want a one-line usage error saying %q", c.args, err, c.want)
		}
		if strings.Contains(errOut, "Creating") {
			t.Errorf("%q: init began before refusing: %s", c.args, errOut)
		}
		if _, err := os.Stat(filepath.Join(home, "sandbox")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: an instance directory was left: %v", c.args, err)
		}
	}
}

// The next step init suggests works on the instance it made.
func TestInitHintNamesTheInstance(t *testing.T) {
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	img := filepath.Join(home, "img.raw")
	diskImage(t, img)
	errOut, err := startRun(t, "--image", img, "--workspace", filepath.Join(home, "ws"), "--memory", "256MiB", "--disk", "1GiB", "--no-start")
	if err != nil || !strings.Contains(errOut, "created box; start it with `cowork start --name box`") {
		t.Errorf("init --name box: %v\n%s", err, errOut)
	}
}

// A downloaded image is checked as a local one is, before its conversion;
// a daemon binary that says nothing about it (another build) is named,
// not read as an image without fault. Either way no instance is left.
func TestInitChecksADownloadedImage(t *testing.T) {
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("not a disk\n"))
	}))
	defer srv.Close()
	for _, c := range []struct {
		inspect func(context.Context, string, string) (hostdwire.Inspection, error)
		want    string
	}{
		{nil, "is not a disk image"}, // parse's inspector: the real checks
		{func(context.Context, string, string) (hostdwire.Inspection, error) {
			return hostdwire.Inspection{}, nil
		}, "from another build than this cowork"},
	} {
		ios, _, _, _ := iostreams.Test()
		o := parse(t, "--image", srv.URL+"/img.raw", "--workspace", filepath.Join(home, "ws"), "--memory", "256MiB", "--disk", "1GiB", "--no-start")
		o.IO = ios
		if c.inspect != nil {
			o.Inspect = c.inspect
		}
		err := run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "--image "+srv.URL+"/img.raw: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v; want %q", err, c.want)
		}
		if _, err := os.Stat(filepath.Join(home, "box")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("an instance directory was left: %v", err)
		}
	}
}
