package instance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/image"

	"github.com/coworkhq/cowork/units"
)

// An init cut short leaves a directory without config.json. The next
// Create starts from nothing: a leftover initrd would boot with the new
// kernel, a half-written disk would be mistaken for a whole one.
func TestCreateOverWhatAnInterruptedInitLeft(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	p, _ := PathsFor("sandbox")
	os.MkdirAll(p.Dir(), 0o700)
	for _, f := range []string{p.Kernel(), p.Initrd(), p.Disk() + ".tmp", filepath.Join(p.Dir(), ".config.json.123")} {
		os.WriteFile(f, []byte("left by the interrupted init, longer than what replaces it"), 0o600)
	}
	src := t.TempDir()
	img, kernel := filepath.Join(src, "img.raw"), filepath.Join(src, "vmlinuz")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	os.WriteFile(kernel, []byte("new kernel"), 0o600)

	c := &Config{Name: "sandbox", Disk: 2 * units.MiB, Workspace: filepath.Join(src, "ws"), Boot: BootKernel}
	if err := Create(c, Sources{Image: img, Kernel: kernel}, makeDisk); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p.Kernel()); string(b) != "new kernel" {
		t.Errorf("kernel %q", b)
	}
	for _, f := range []string{p.Initrd(), p.Disk() + ".tmp"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived from the interrupted init", filepath.Base(f))
		}
	}
	// A second Create does not touch a complete instance.
	if err := Create(c, Sources{Image: img}, makeDisk); err == nil {
		t.Fatal("Create over a complete instance succeeded")
	}
	if b, _ := os.ReadFile(p.Kernel()); string(b) != "new kernel" {
		t.Errorf("a refused Create changed the kernel: %q", b)
	}
}

// A folder without config.json that holds more than an interrupted Create
// leaves (an instance that has run and lost its config, or no instance at
// all in an odd COWORK_HOME) is never overwritten: Create refuses and
// changes nothing.
func TestCreateNeverOverwritesAFolderItDidNotMake(t *testing.T) {
	src := t.TempDir()
	img := filepath.Join(src, "img.raw")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	for _, found := range []string{"provisioned", "efi-vars", "hostd.log", "serial.log", "notes.txt"} {
		t.Setenv("COWORK_HOME", t.TempDir())
		p, _ := PathsFor("sandbox")
		os.MkdirAll(p.Dir(), 0o700)
		os.WriteFile(p.Disk(), []byte("the guest's work"), 0o600)
		os.WriteFile(filepath.Join(p.Dir(), found), []byte("kept"), 0o600)
		c := &Config{Name: "sandbox", Disk: 2 * units.MiB, Workspace: filepath.Join(src, "ws")}
		err := Create(c, Sources{Image: img}, makeDisk)
		if err == nil || !strings.Contains(err.Error(), p.Dir()+" exists and is not an instance (no config.json; it holds "+found+")") {
			t.Errorf("with %s: %v", found, err)
		}
		if b, _ := os.ReadFile(p.Disk()); string(b) != "the guest's work" {
			t.Errorf("with %s: the disk holds %q", found, b)
		}
		if b, _ := os.ReadFile(filepath.Join(p.Dir(), found)); string(b) != "kept" {
			t.Errorf("with %s: it holds %q", found, b)
		}
		if _, err := os.Stat(p.Config()); !os.IsNotExist(err) {
			t.Errorf("with %s: a config was written: %v", found, err)
		}
	}
}

// copyFile replaces the destination whole.
func TestCopyFileReplacesALongerFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("short"), 0o600)
	os.WriteFile(dst, []byte("a longer file that was there before"), 0o600)
	if err := copyFile(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "short" {
		t.Fatalf("dst is %q, want the source's bytes and nothing after", b)
	}
}

func TestGrowDiskGrowsOnly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.raw")
	os.WriteFile(p, []byte("data"), 0o600)
	os.Truncate(p, 1<<20)
	if err := GrowDisk(p, 2<<20); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Size() != 2<<20 {
		t.Fatalf("size %d", st.Size())
	}
	if err := GrowDisk(p, 1<<20); err == nil || !strings.Contains(err.Error(), "never shrink") {
		t.Fatalf("shrinking: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b[:4]) != "data" {
		t.Fatal("resize lost data")
	}
}

// makeDisk is what cowork-hostd does for Create, in the test's process.
func makeDisk(src Sources, p Paths, size int64) (string, error) {
	return DiskRaw, image.MakeDisk(src.Image, p.Disk(), size, nil)
}
