package qemu

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
)

// qemuSaying puts a qemu-system-aarch64 on PATH that says it is version.
func qemuSaying(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "qemu-system-aarch64")
	script := "#!/bin/sh\necho 'QEMU emulator version " + version + "'\necho 'Copyright (c) 2003-2022 Fabrice Bellard'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return bin
}

// The identity a saved guest depends on is the same for the VM that
// saves and a new one made from the same config, and changes with every
// setting the guest knows: a resume into anything else is refused.
func TestIdentity(t *testing.T) {
	bin := qemuSaying(t, "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)")
	identity := func(c func(*machine.Config)) string {
		cfg := config()
		if c != nil {
			c(&cfg)
		}
		v, err := New(cfg, slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		v.accel = "tcg" // what a launch found: no probe here
		id, err := v.Identity(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if id.Binary != bin || id.Version != "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)" || id.Firmware != "" || len(id.Devices) != 64 {
			t.Fatalf("identity %+v", id)
		}
		return id.Devices
	}
	base := identity(nil)
	if again := identity(nil); again != base {
		t.Error("two VMs of one config have different identities")
	}
	// The disk's file and format are the manifest's to check, apart.
	if identity(func(c *machine.Config) { c.Disk, c.DiskFormat = "/i/disk.qcow2", "qcow2" }) != base {
		t.Error("the disk's name changes the device layout")
	}
	// Nor do the folder of the instance's own files: a clone resumes its
	// source's memory from a folder of its own.
	if identity(func(c *machine.Config) {
		c.Kernel, c.Initrd, c.CIData, c.RunDir = "/j/kernel", "/j/initrd", "/j/cidata.iso", "/j/run"
	}) != base {
		t.Error("the instance's folder changes the device layout")
	}
	for name, change := range map[string]func(*machine.Config){
		"no initrd": func(c *machine.Config) { c.Initrd = "" },
		"cpus":      func(c *machine.Config) { c.CPUs = 4 },
		"memory":    func(c *machine.Config) { c.Memory = 2 << 30 },
		"cidata":    func(c *machine.Config) { c.CIData = "" },
		"mac":       func(c *machine.Config) { c.MAC = append(c.MAC[:5:5], 9) },
		"share":     func(c *machine.Config) { c.Shares = []machine.Share{{Dir: "/ws", Tag: "other"}} },
		"a share more": func(c *machine.Config) {
			c.Shares = append(slices.Clone(c.Shares), machine.Share{Dir: "/data", Tag: "mount1"})
		},
	} {
		if identity(change) == base {
			t.Errorf("a change of %s leaves the identity as it was", name)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string]string{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright": "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)",
		"QEMU emulator version 9.1.0\n":                                          "9.1.0",
	} {
		if got, err := parseVersion(out); err != nil || got != want {
			t.Errorf("%q: %q %v", out, got, err)
		}
	}
	for _, out := range []string{"", "qemu\n", "QEMU emulator version \n"} {
		if got, err := parseVersion(out); err == nil {
			t.Errorf("%q: %q, want an error", out, got)
		}
	}
}

// The version of a QEMU binary is asked once and kept in the backend's
// cache: a resume does not run QEMU to learn it again, until the binary
// changes.
func TestIdentityKeepsTheVersion(t *testing.T) {
	bin := qemuSaying(t, "7.2.22")
	cfg := config()
	cfg.CacheDir = t.TempDir()
	version := func() (string, error) {
		v, err := New(cfg, slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		v.accel = "tcg"
		id, err := v.Identity(context.Background())
		return id.Version, err
	}
	if got, err := version(); err != nil || got != "7.2.22" {
		t.Fatalf("%q %v", got, err)
	}
	st, _ := os.Stat(bin)
	broken := "#!/bin/sh\nexit 1\n" + strings.Repeat("#", int(st.Size())-len("#!/bin/sh\nexit 1\n"))
	if err := os.WriteFile(bin, []byte(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(bin, st.ModTime(), st.ModTime())
	if got, err := version(); err != nil || got != "7.2.22" {
		t.Errorf("the same binary (path, size, time) again: %q %v, want the kept version", got, err)
	}
	later := st.ModTime().Add(time.Minute)
	os.Chtimes(bin, later, later)
	if got, err := version(); err == nil {
		t.Errorf("a changed binary: %q, want it asked (and failing)", got)
	}
}
