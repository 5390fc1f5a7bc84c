package savestate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sample() Manifest {
	return Manifest{
		Saved:      time.Unix(1796430000, 0).UTC(),
		Backend:    "qemu",
		Cowork:     "0.1.0",
		Hypervisor: Binary{Path: "/usr/bin/qemu-system-aarch64", SHA256: strings.Repeat("a", 64), Version: "7.2.22"},
		VM:         VM{Arch: "arm64", CPUs: 2, Memory: 1 << 30, Disk: "/h/sandbox/disk.raw", DiskFormat: "raw", MAC: "52:54:00:00:00:01", FirmwareSHA256: strings.Repeat("f", 64), Devices: "-M virt -device virtio-blk-pci …"},
		HostBootID: "0d4c1b6c-1111-2222-3333-444455556666",
		Disk:       DiskStamp{Ino: 42, Size: 2 << 30, MtimeNs: 1796430000123456789},
		Files:      []FileSize{{Name: "device.state", Size: 562000}, {Name: "ram", Size: 1 << 30}},
	}
}

// Every way the host, the hypervisor or the VM can differ from the save
// is refused, naming what changed; only an exact match resumes.
func TestCheckRefusesEveryChange(t *testing.T) {
	saved := sample()
	saved.Version = Version
	if err := saved.Check(sample()); err != nil {
		t.Fatalf("the same host and VM: %v", err)
	}
	for _, tc := range []struct {
		what   string
		change func(*Manifest)
	}{
		{"the backend", func(m *Manifest) { m.Backend = "vz" }},
		{"cowork", func(m *Manifest) { m.Cowork = "0.2.0" }},
		{"the firmware", func(m *Manifest) { m.VM.FirmwareSHA256 = strings.Repeat("e", 64) }},
		{"the host (it restarted since)", func(m *Manifest) { m.HostBootID = "9f9f9f9f-0000" }},
		{"the hypervisor's binary", func(m *Manifest) { m.Hypervisor.Path = "/usr/local/bin/qemu-system-aarch64" }},
		{"the hypervisor's version", func(m *Manifest) { m.Hypervisor.Version = "8.2.1" }},
		{"the hypervisor's build", func(m *Manifest) { m.Hypervisor.SHA256 = strings.Repeat("b", 64) }},
		{"the architecture", func(m *Manifest) { m.VM.Arch = "amd64" }},
		{"the CPU count", func(m *Manifest) { m.VM.CPUs = 4 }},
		{"the memory", func(m *Manifest) { m.VM.Memory = 2 << 30 }},
		{"the disk", func(m *Manifest) { m.VM.Disk = "/h/other/disk.raw" }},
		{"the disk's format", func(m *Manifest) { m.VM.DiskFormat = "qcow2" }},
		{"the MAC address", func(m *Manifest) { m.VM.MAC = "52:54:00:00:00:02" }},
		{"the device layout", func(m *Manifest) { m.VM.Devices += " -device virtio-rng-pci" }},
		{"the disk was written since the save", func(m *Manifest) { m.Disk.MtimeNs++ }},
		{"the disk was written since the save", func(m *Manifest) { m.Disk.Size += 4096 }},
		{"the disk was written since the save", func(m *Manifest) { m.Disk.Ino = 43 }},
	} {
		now := sample()
		tc.change(&now)
		err := saved.Check(now)
		var r *Refused
		if !errors.As(err, &r) || r.What != tc.what {
			t.Errorf("%s: got %v", tc.what, err)
			continue
		}
		if !strings.Contains(err.Error(), "cold-boots") {
			t.Errorf("%s: the message does not say what happens: %v", tc.what, err)
		}
	}
	old := saved
	old.Version = Version + 1
	if err := old.Check(sample()); err == nil || !strings.Contains(err.Error(), "format") {
		t.Errorf("another format: %v", err)
	}
}

func TestCheckRefusesQEMUUpgradeWithBothVersions(t *testing.T) {
	saved := sample()
	saved.Version = Version
	now := sample()
	now.Hypervisor.Version = "8.2.1"
	err := saved.Check(now)
	if err == nil || err.Error() != "saved state refused: the hypervisor's version changed (7.2.22 → 8.2.1); the instance cold-boots instead" {
		t.Errorf("got %v", err)
	}
}

// The manifest is the save's commit point: written whole or not at all,
// read back equal, and refused when it is anything but hostd's own small
// file.
func TestWriteLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, ErrNone) {
		t.Fatalf("an empty folder: %v", err)
	}
	m := sample()
	if err := Write(dir, &m); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Check(sample()); err != nil {
		t.Errorf("read back, it does not match what was saved: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("Write left %d files", len(entries))
	}
	if st, _ := os.Stat(filepath.Join(dir, ManifestName)); st.Mode().Perm() != 0o600 {
		t.Errorf("manifest mode %v", st.Mode())
	}
}

func TestLoadRefusesHostileManifests(t *testing.T) {
	put := func(t *testing.T, how func(path string)) string {
		dir := t.TempDir()
		how(filepath.Join(dir, ManifestName))
		return dir
	}
	outside := filepath.Join(t.TempDir(), "elsewhere.json")
	m := sample()
	if err := Write(filepath.Dir(outside), &m); err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(filepath.Dir(outside), ManifestName), outside)
	for name, how := range map[string]func(string){
		"a symlink":       func(p string) { os.Symlink(outside, p) },
		"a fifo":          func(p string) { syscall.Mkfifo(p, 0o600) },
		"a folder":        func(p string) { os.Mkdir(p, 0o700) },
		"huge":            func(p string) { os.WriteFile(p, make([]byte, maxManifest+1), 0o600) },
		"not JSON":        func(p string) { os.WriteFile(p, []byte("{"), 0o600) },
		"another version": func(p string) { os.WriteFile(p, []byte(`{"version": 99}`), 0o600) },
		"no version":      func(p string) { os.WriteFile(p, []byte(`{}`), 0o600) },
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(put(t, how)); done <- err }()
		select {
		case err := <-done:
			var r *Refused
			if !errors.As(err, &r) {
				t.Errorf("%s: %v, want it refused", name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s: Load hangs", name)
		}
	}
}

// The state's files must be whole and its own: each named file inside the
// folder, regular, of the size saved.
func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "device.state"), make([]byte, 100), 0o600)
	os.WriteFile(filepath.Join(dir, "ram"), make([]byte, 300), 0o600)
	sizes, err := Sizes(dir, "ram", "device.state")
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{Files: sizes}
	if err := m.CheckFiles(dir); err != nil {
		t.Fatalf("whole files: %v", err)
	}
	for name, files := range map[string][]FileSize{
		"none":          nil,
		"truncated":     {{Name: "ram", Size: 301}},
		"missing":       {{Name: "gone", Size: 1}},
		"outside":       {{Name: "../ram", Size: 300}},
		"the manifest":  {{Name: ManifestName, Size: 0}},
		"a hidden file": {{Name: ".x", Size: 0}},
	} {
		m := Manifest{Files: files}
		if err := m.CheckFiles(dir); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	os.Remove(filepath.Join(dir, "ram"))
	os.Symlink(filepath.Join(t.TempDir(), "x"), filepath.Join(dir, "ram"))
	if err := (&Manifest{Files: sizes}).CheckFiles(dir); err == nil {
		t.Error("a symlinked ram file: accepted")
	}
}

func TestHostBootIDIsStable(t *testing.T) {
	a, err := HostBootID()
	if err != nil || len(a) < 16 {
		t.Fatalf("boot id %q, %v", a, err)
	}
	if b, _ := HostBootID(); a != b {
		t.Errorf("two reads differ: %q, %q", a, b)
	}
}

func TestStamp(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.raw")
	os.WriteFile(disk, make([]byte, 4096), 0o600)
	a, err := Stamp(disk)
	if err != nil || a.Ino == 0 || a.Size != 4096 {
		t.Fatalf("stamp %+v, %v", a, err)
	}
	f, _ := os.OpenFile(disk, os.O_WRONLY, 0)
	f.WriteAt([]byte{1}, 10)
	f.Close()
	os.Chtimes(disk, time.Now(), time.Now().Add(time.Second))
	if b, _ := Stamp(disk); b == a {
		t.Error("a written disk keeps its stamp")
	}
}

// A saved state's size on disk counts the data of its sparse RAM file,
// not its length.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	ram, err := os.Create(filepath.Join(dir, "ram"))
	if err != nil {
		t.Fatal(err)
	}
	ram.Truncate(1 << 30)
	ram.WriteAt(make([]byte, 1<<20), 0)
	ram.Close()
	os.WriteFile(filepath.Join(dir, "device.state"), make([]byte, 4096), 0o600)
	if got := Usage(dir); got < 1<<20 || got > 4<<20 {
		t.Errorf("Usage = %d, want a little over 1 MiB of a 1 GiB sparse file", got)
	}
	if got := Usage(filepath.Join(dir, "none")); got != 0 {
		t.Errorf("a missing folder: %d", got)
	}
}
