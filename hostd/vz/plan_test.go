package vz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/machine"
)

var limits = Limits{MinCPUs: 1, MaxCPUs: 8, MinMemory: 128 << 20, MaxMemory: 16 << 30}

func config(t *testing.T) machine.Config {
	t.Helper()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "Image")
	img := make([]byte, 128)
	copy(img[56:], "ARM\x64")
	os.WriteFile(kernel, img, 0o600)
	os.WriteFile(filepath.Join(dir, "disk.raw"), make([]byte, 4096), 0o600)
	return machine.Config{
		Arch: "arm64", CPUs: 4, Memory: 4 << 30,
		Disk: filepath.Join(dir, "disk.raw"), CIData: filepath.Join(dir, "cidata.iso"),
		Kernel: kernel, Cmdline: "console=hvc0",
		MachineID: filepath.Join(dir, "machine-id"),
		Shares:    []machine.Share{{Dir: dir, Tag: "workspace"}},
		Network:   os.Stdin,
		Console:   os.Stdout, RunDir: filepath.Join(dir, "run"),
	}
}

func TestPlanLaysOutTheDevices(t *testing.T) {
	c := config(t)
	p, err := NewPlan(c, "arm64", "14.6.1", limits)
	if err != nil {
		t.Fatal(err)
	}
	if p.CPUs != 4 || p.Memory != 4<<30 || p.MTU != 1500 || p.Kernel != c.Kernel {
		t.Errorf("plan %+v", p)
	}
	want := []Disk{{Path: c.Disk, Cached: true}, {Path: c.CIData, ReadOnly: true}}
	if len(p.Disks) != 2 || p.Disks[0] != want[0] || p.Disks[1] != want[1] {
		t.Errorf("disks %+v, want %+v", p.Disks, want)
	}
	if p.EFIVars != "" || p.CreateEFIVars {
		t.Errorf("a kernel boot has no EFI store: %+v", p)
	}
}

// The entropy device and the balloon only where no VM can be saved anyway
// (macOS 13); from 14 on the plan leaves them out, to be savable.
func TestPlanSavableDevicesFromMacOS14(t *testing.T) {
	for _, c := range []struct {
		macOS string
		extra bool
	}{{"13.6.7", true}, {"14.0", false}, {"14.6.1", false}, {"15.5", false}} {
		p, err := NewPlan(config(t), "arm64", c.macOS, limits)
		if err != nil {
			t.Fatal(err)
		}
		if p.Entropy != c.extra || p.Balloon != c.extra {
			t.Errorf("macOS %s: entropy %v, balloon %v; want both %v", c.macOS, p.Entropy, p.Balloon, c.extra)
		}
	}
}

func TestPlanEFIStoreMadeOnFirstBootOnly(t *testing.T) {
	c := config(t)
	c.Kernel, c.EFIVars = "", filepath.Join(t.TempDir(), "efi-vars")
	p, err := NewPlan(c, "arm64", "13.0", limits)
	if err != nil || !p.CreateEFIVars || p.EFIVars != c.EFIVars {
		t.Fatalf("first boot: %+v, %v", p, err)
	}
	os.WriteFile(c.EFIVars, []byte("store"), 0o600)
	if p, err := NewPlan(c, "arm64", "13.0", limits); err != nil || p.CreateEFIVars {
		t.Fatalf("later boot: %+v, %v", p, err)
	}
}

func TestPlanRefusals(t *testing.T) {
	gz := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(gz, []byte("\x1f\x8b\x08\x00compressed"), 0o600)
	bz := filepath.Join(t.TempDir(), "bzImage")
	b := make([]byte, 1024)
	copy(b[0x202:], "HdrS")
	os.WriteFile(bz, b, 0o600)
	for _, c := range []struct {
		name   string
		change func(*machine.Config)
		macOS  string
		want   string
	}{
		{"old macOS", nil, "12.7.4", "macOS 12.7.4 is too old"},
		{"garbled version", nil, "x", "cannot tell the macOS version"},
		{"guest of another arch", func(c *machine.Config) { c.Arch = "amd64" }, "14.0", "only guests of the Mac's own architecture (arm64)"},
		{"too many CPUs", func(c *machine.Config) { c.CPUs = 64 }, "14.0", "64 CPUs is outside what this Mac allows a VM (1 to 8)"},
		{"too little memory", func(c *machine.Config) { c.Memory = 64 << 20 }, "14.0", "64 MiB of memory is outside"},
		{"compressed kernel", func(c *machine.Config) { c.Kernel = gz }, "14.0", "is compressed"},
		{"x86 kernel", func(c *machine.Config) { c.Kernel = bz }, "14.0", "is for amd64, not arm64"},
		{"invalid config", func(c *machine.Config) { c.Network = nil }, "14.0", "no network"},
	} {
		cfg := config(t)
		if c.change != nil {
			c.change(&cfg)
		}
		_, err := NewPlan(cfg, "arm64", c.macOS, limits)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

func TestExplainNamesTheFix(t *testing.T) {
	unsigned := errors.New("Error Domain=VZErrorDomain Code=2 \"Invalid virtual machine configuration. The process doesn’t have the “com.apple.security.virtualization” entitlement.\"")
	if err := Explain(unsigned); !errors.Is(err, ErrNoEntitlement) || !strings.Contains(err.Error(), "codesign --force --entitlements entitlements.plist") {
		t.Errorf("unsigned: %v", err)
	}
	other := errors.New("something else")
	if Explain(other) != other || Explain(nil) != nil {
		t.Error("other errors must pass through")
	}
}

func TestCheckValidNeverPrintsANilError(t *testing.T) {
	if err := checkValid(true, nil); err != nil {
		t.Errorf("valid: %v", err)
	}
	err := checkValid(false, nil)
	if err == nil || strings.Contains(err.Error(), "%!") || !strings.Contains(err.Error(), "without saying why") {
		t.Errorf("false without an error: %v", err)
	}
	unsigned := errors.New("the process doesn’t have the “com.apple.security.virtualization” entitlement")
	if err := checkValid(false, unsigned); !errors.Is(err, ErrNoEntitlement) || !strings.Contains(err.Error(), "is invalid") {
		t.Errorf("false with an error: %v", err)
	}
}
