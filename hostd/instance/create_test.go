package instance

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/internal/units"
)

// An init cut short leaves a directory without config.json. The next
// Create starts from nothing: a leftover initrd would boot with the new
// kernel, a leftover "provisioned" marker would skip the provisioning, and
// a leftover EFI store belongs to another image.
func TestCreateOverWhatAnInterruptedInitLeft(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	p, _ := PathsFor("sandbox")
	os.MkdirAll(p.Dir(), 0o700)
	for _, f := range []string{p.Kernel(), p.Initrd(), p.Provisioned(), p.EFIVars(), p.Disk() + ".tmp"} {
		os.WriteFile(f, []byte("left by the interrupted init, longer than what replaces it"), 0o600)
	}
	src := t.TempDir()
	img, kernel := filepath.Join(src, "img.raw"), filepath.Join(src, "vmlinuz")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	os.WriteFile(kernel, []byte("new kernel"), 0o600)

	c := &Config{Name: "sandbox", Disk: 2 * units.MiB, Workspace: filepath.Join(src, "ws"), Boot: BootKernel}
	if err := Create(c, Sources{Image: img, Kernel: kernel}, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p.Kernel()); string(b) != "new kernel" {
		t.Errorf("kernel %q", b)
	}
	for _, f := range []string{p.Initrd(), p.Provisioned(), p.EFIVars(), p.Disk() + ".tmp"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived from the interrupted init", filepath.Base(f))
		}
	}
	// A second Create does not touch a complete instance.
	if err := Create(c, Sources{Image: img}, nil); err == nil {
		t.Fatal("Create over a complete instance succeeded")
	}
	if b, _ := os.ReadFile(p.Kernel()); string(b) != "new kernel" {
		t.Errorf("a refused Create changed the kernel: %q", b)
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
