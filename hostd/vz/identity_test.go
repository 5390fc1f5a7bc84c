package vz

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
)

// testPlan is a kernel-booted plan with every device a cowork VM has.
func testPlan(t *testing.T) *Plan {
	t.Helper()
	p, err := NewPlan(config(t), "arm64", "14.6.1", limits)
	if err != nil {
		t.Fatal(err)
	}
	p.MAC = net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	return p
}

// clonePlan is a copy of p that shares nothing a change would alter.
func clonePlan(p *Plan) *Plan {
	q := *p
	q.Disks = append([]Disk(nil), p.Disks...)
	q.Shares = append([]machine.Share(nil), p.Shares...)
	q.MAC = append(net.HardwareAddr(nil), p.MAC...)
	return &q
}

// The digest is the same for the same layout, whatever belongs to one
// run only: the descriptors, and whether the EFI store is made now.
func TestDeviceDigestIgnoresTheRun(t *testing.T) {
	p := testPlan(t)
	id := []byte("machine identifier")
	want := deviceDigest(p, id)
	if len(want) != 64 {
		t.Fatalf("digest %q, want 64 hex digits", want)
	}
	q := *clonePlan(p)
	q.Network, q.Console, q.ConsoleIn, q.CreateEFIVars = os.Stderr, os.Stdin, os.Stdout, !p.CreateEFIVars
	if got := deviceDigest(&q, append([]byte(nil), id...)); got != want {
		t.Errorf("another run of the same VM: digest %s, want %s\n%s", got, want, deviceLayout(&q, id))
	}
}

// Each change of what the saved guest depends on changes the digest, and
// no two changes give the same one.
func TestDeviceDigestChangesWithEachDevice(t *testing.T) {
	id := []byte("machine identifier")
	changes := map[string]func(p *Plan) []byte{
		"cpus":            func(p *Plan) []byte { p.CPUs++; return id },
		"memory":          func(p *Plan) []byte { p.Memory += 1 << 20; return id },
		"kernel":          func(p *Plan) []byte { p.Kernel += "2"; return id },
		"initrd":          func(p *Plan) []byte { p.Initrd = "/initrd"; return id },
		"cmdline":         func(p *Plan) []byte { p.Cmdline += " quiet"; return id },
		"efi boot":        func(p *Plan) []byte { p.Kernel, p.EFIVars = "", "/efi-vars"; return id },
		"efi vars":        func(p *Plan) []byte { p.Kernel, p.EFIVars = "", "/other-efi-vars"; return id },
		"machine id file": func(p *Plan) []byte { p.MachineID += "2"; return id },
		"machine id":      func(p *Plan) []byte { return []byte("another identifier") },
		"no machine id":   func(p *Plan) []byte { return nil },
		"disk path":       func(p *Plan) []byte { p.Disks[0].Path += "2"; return id },
		"disk read-only":  func(p *Plan) []byte { p.Disks[0].ReadOnly = true; return id },
		"disk cache":      func(p *Plan) []byte { p.Disks[0].Cached = false; return id },
		"disk order":      func(p *Plan) []byte { p.Disks[0], p.Disks[1] = p.Disks[1], p.Disks[0]; return id },
		"a disk fewer":    func(p *Plan) []byte { p.Disks = p.Disks[:1]; return id },
		"share dir":       func(p *Plan) []byte { p.Shares[0].Dir += "2"; return id },
		"share tag":       func(p *Plan) []byte { p.Shares[0].Tag = "other"; return id },
		"share read-only": func(p *Plan) []byte { p.Shares[0].ReadOnly = true; return id },
		"a share more":    func(p *Plan) []byte { p.Shares = append(p.Shares, machine.Share{Dir: "/d", Tag: "mount1"}); return id },
		"no share":        func(p *Plan) []byte { p.Shares = nil; return id },
		"mac":             func(p *Plan) []byte { p.MAC = net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x57}; return id },
		"mtu":             func(p *Plan) []byte { p.MTU = 9000; return id },
		"entropy":         func(p *Plan) []byte { p.Entropy = true; return id },
		"balloon":         func(p *Plan) []byte { p.Balloon = true; return id },
	}
	base := testPlan(t)
	seen := map[string]string{deviceDigest(base, id): "the base"}
	for name, change := range changes {
		p := clonePlan(base)
		mid := change(p)
		got := deviceDigest(p, mid)
		if prev, ok := seen[got]; ok {
			t.Errorf("%s: the same digest as %s", name, prev)
		}
		seen[got] = name
	}
}

// A path cannot add a line of its own to the layout.
func TestDeviceLayoutQuotesPaths(t *testing.T) {
	p := testPlan(t)
	lines := strings.Count(deviceLayout(p, nil), "\n")
	p.Shares[0].Dir = "/ws\nentropy true\nballoon true"
	p.Disks[0].Path = "/disk\ndisk 9 virtio-blk"
	if got := strings.Count(deviceLayout(p, nil), "\n"); got != lines {
		t.Errorf("%d lines with newlines in paths, %d without:\n%s", got, lines, deviceLayout(p, nil))
	}
}

// fakeStat stats a made-up file system: regular files and directories.
func fakeStat(files map[string]fs.FileMode) func(string) (os.FileInfo, error) {
	return func(name string) (os.FileInfo, error) {
		m, ok := files[name]
		if !ok {
			return nil, fs.ErrNotExist
		}
		return fakeInfo{name, m}, nil
	}
}

type fakeInfo struct {
	name string
	mode fs.FileMode
}

func (f fakeInfo) Name() string       { return filepath.Base(f.name) }
func (f fakeInfo) Size() int64        { return 1 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return nil }

// The framework's own binary when it is on disk, else its VM service, else
// the OS's version record; a directory is no binary; none is an error.
func TestFrameworkBinary(t *testing.T) {
	fw, xpc, plist := frameworkBinaries[0], frameworkBinaries[1], frameworkBinaries[2]
	for _, c := range []struct {
		name  string
		files map[string]fs.FileMode
		want  string
	}{
		{"all there", map[string]fs.FileMode{fw: 0o755, xpc: 0o755, plist: 0o644}, fw},
		{"in the shared cache", map[string]fs.FileMode{xpc: 0o755, plist: 0o644}, xpc},
		{"a directory", map[string]fs.FileMode{fw: fs.ModeDir | 0o755, plist: 0o644}, plist},
		{"none", map[string]fs.FileMode{}, ""},
	} {
		got, err := frameworkBinary(frameworkBinaries, fakeStat(c.files))
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestOSVersion(t *testing.T) {
	if v, err := osVersion("14.6.1\n", "23G93"); err != nil || v != "macOS 14.6.1 (23G93)" {
		t.Errorf("got %q, %v", v, err)
	}
	if _, err := osVersion("14.6.1", ""); err == nil {
		t.Error("a macOS without a build was accepted")
	}
}

func TestReadMachineID(t *testing.T) {
	dir := t.TempDir()
	if b, err := readMachineID(filepath.Join(dir, "none")); b != nil || err != nil {
		t.Errorf("no identifier yet: %q, %v; want nil, nil", b, err)
	}
	ok := filepath.Join(dir, "machine-id")
	os.WriteFile(ok, []byte("identifier"), 0o600)
	if b, err := readMachineID(ok); string(b) != "identifier" || err != nil {
		t.Errorf("%q, %v", b, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, maxMachineID+1), 0o600)
	if _, err := readMachineID(big); err == nil {
		t.Error("an identifier over the bound was read")
	}
	if _, err := readMachineID(dir); err == nil {
		t.Error("a directory was read as an identifier")
	}
}

// identity: the framework's file, the macOS version and build, and a
// digest that follows the machine identifier on disk.
func TestIdentity(t *testing.T) {
	p := testPlan(t)
	stat := fakeStat(map[string]fs.FileMode{frameworkBinaries[1]: 0o755})
	id, err := identity("14.6.1", "23G93", p, stat)
	if err != nil {
		t.Fatal(err)
	}
	if id.Binary != frameworkBinaries[1] || id.Version != "macOS 14.6.1 (23G93)" || id.Firmware != "" || id.Devices != deviceDigest(p, nil) {
		t.Errorf("identity %+v", id)
	}
	os.WriteFile(p.MachineID, []byte("identifier"), 0o600)
	again, err := identity("14.6.1", "23G93", p, stat)
	if err != nil || again.Devices == id.Devices {
		t.Errorf("a machine identifier made since: devices %s, before %s (%v)", again.Devices, id.Devices, err)
	}
	if _, err := identity("14.6.1", "23G93", p, fakeStat(nil)); err == nil {
		t.Error("an identity without the framework's files")
	}
	os.WriteFile(p.MachineID, make([]byte, maxMachineID+1), 0o600)
	if _, err := identity("14.6.1", "23G93", p, stat); err == nil {
		t.Error("an identity with an oversized machine identifier")
	}
}
