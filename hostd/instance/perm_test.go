package instance

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/internal/permtest"

	"github.com/coworkhq/cowork/units"
)

// The instance directory holds the sockets that reach the VM, its disk and
// its config: only its owner may enter it, and what is in it is the
// owner's alone even if the directory's mode were changed.
func TestInstanceFilesAreOwnerOnly(t *testing.T) {
	permtest.ClearUmask(t)
	home := filepath.Join(t.TempDir(), "home") // made by Create
	t.Setenv("COWORK_HOME", home)
	src := t.TempDir()
	img := filepath.Join(src, "img.raw")
	os.WriteFile(img, []byte("disk"), 0o644)
	os.Truncate(img, 1<<20)
	kernel, initrd := filepath.Join(src, "vmlinuz"), filepath.Join(src, "initrd")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(initrd, []byte("initrd"), 0o644)

	c := &Config{Name: "sandbox", Disk: 2 * units.MiB, Workspace: filepath.Join(src, "ws"), Boot: BootKernel}
	if err := Create(c, Sources{Image: img, Kernel: kernel, Initrd: initrd}, makeDisk); err != nil {
		t.Fatal(err)
	}
	p, _ := PathsFor("sandbox")
	permtest.WantMode(t, home, 0o700)
	permtest.WantMode(t, p.Dir(), 0o700)
	for _, f := range []string{p.Config(), p.Disk(), p.Kernel(), p.Initrd()} {
		permtest.WantMode(t, f, 0o600)
	}
	if b, _ := os.ReadFile(p.Kernel()); string(b) != "kernel" {
		t.Errorf("kernel copied as %q", b)
	}

	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := WritePid(p); err != nil {
		t.Fatal(err)
	}
	permtest.WantMode(t, p.LockFile(), 0o600)
	permtest.WantMode(t, p.PidFile(), 0o600)
	writeAudit(t, p)
	for _, f := range []string{p.NetworkLog(), p.AuditKey(), p.AuditHead()} {
		permtest.WantMode(t, f, 0o600)
	}
}

// WriteFileAtomic gives the file the mode asked for, whatever the umask,
// and replaces a longer file whole.
func TestWriteFileAtomicModeAndContent(t *testing.T) {
	permtest.ClearUmask(t)
	path := filepath.Join(t.TempDir(), "last-stop.txt")
	os.WriteFile(path, []byte("a much longer message than the next one\n"), 0o644)
	for _, mode := range []os.FileMode{0o600, 0o640} {
		if err := WriteFileAtomic(path, []byte("short\n"), mode); err != nil {
			t.Fatal(err)
		}
		permtest.WantMode(t, path, mode)
		if b, _ := os.ReadFile(path); string(b) != "short\n" {
			t.Fatalf("content %q", b)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}
