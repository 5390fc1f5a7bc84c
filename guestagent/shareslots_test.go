package guestagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeSlots is a sysfs tree as an arm64 QEMU guest has it: a share's
// virtiofs device behind a hot-plug root port that pciehp drives,
// another behind a port without a power controller, and a virtio disk
// on the root bus. Its writes act as the kernel and QEMU would.
type fakeSlots struct {
	t    *testing.T
	root string
	mu   sync.Mutex
	ops  []string // what was written, in order
	// plugged: the host has put a device behind the share's port; a
	// rescan of the port then finds it. failBind: pciehp does not take a
	// slot back.
	plugged, failBind bool
}

const (
	sharePort  = "0000:00:03.0"
	shareDev   = "0000:01:00.0"
	plainPort  = "0000:00:04.0" // hot-plug, but no power controller
	plainDev   = "0000:02:00.0"
	diskDev    = "0000:00:01.0"
	slotCapAt  = 0x54
	slotCtlOff = slotCapAt + expSlotCtl
)

func newFakeSlots(t *testing.T) *fakeSlots {
	f := &fakeSlots{t: t, root: t.TempDir()}
	host := filepath.Join(f.root, "devices", "pci0000:00")
	f.port(host, sharePort, slotCapHotplug|slotCapPower)
	f.port(host, plainPort, slotCapHotplug)
	f.device(filepath.Join(host, sharePort), shareDev, virtiofsDevice)
	f.device(filepath.Join(host, plainPort), plainDev, virtiofsDevice)
	f.device(host, diskDev, "0x1001")
	hp := filepath.Join(f.root, "bus", "pci_express", "drivers", "pciehp")
	f.mkdir(filepath.Join(hp, sharePort+":pcie004"))
	f.mkdir(filepath.Join(hp, plainPort+":pcie004"))
	f.file(filepath.Join(hp, "unbind"), "")
	return f
}

func (f *fakeSlots) mkdir(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSlots) file(path, data string) {
	f.mkdir(filepath.Dir(path))
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// port makes a root port whose PCI Express capability (at 0x54, after a
// capability of another kind) has slot capabilities slotCap, its slot
// powered on with its indicator on.
func (f *fakeSlots) port(host, name string, slotCap uint32) {
	cfg := make([]byte, 256)
	cfg[0x34] = 0x40
	cfg[0x40], cfg[0x41] = 0x01, slotCapAt // power management, then PCIe
	cfg[slotCapAt], cfg[slotCapAt+1] = capPCIe, 0
	binary.LittleEndian.PutUint32(cfg[slotCapAt+expSlotCap:], slotCap)
	binary.LittleEndian.PutUint16(cfg[slotCtlOff:], 0x01f1)
	dir := filepath.Join(host, name)
	f.file(filepath.Join(dir, "config"), string(cfg))
	f.file(filepath.Join(dir, "class"), "0x060400\n")
	f.file(filepath.Join(dir, "rescan"), "")
	f.link(dir)
}

func (f *fakeSlots) device(parent, name, device string) {
	dir := filepath.Join(parent, name)
	f.file(filepath.Join(dir, "vendor"), virtioVendor+"\n")
	f.file(filepath.Join(dir, "device"), device+"\n")
	f.file(filepath.Join(dir, "class"), "0x018000\n")
	f.file(filepath.Join(dir, "remove"), "")
	f.link(dir)
}

func (f *fakeSlots) link(dir string) {
	l := filepath.Join(f.root, "bus", "pci", "devices", filepath.Base(dir))
	f.mkdir(filepath.Dir(l))
	if err := os.Symlink(dir, l); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSlots) slots() *shareSlots {
	return &shareSlots{root: f.root, write: f.write, writeConfig: f.writeConfig}
}

func (f *fakeSlots) rel(path string) string {
	r, _ := filepath.Rel(f.root, path)
	return r
}

// write does what the kernel does with the attribute written.
func (f *fakeSlots) write(path, data string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, fmt.Sprintf("%s=%s", f.rel(path), data))
	switch filepath.Base(path) {
	case "unbind":
		return os.Remove(filepath.Join(filepath.Dir(path), data))
	case "bind":
		if f.failBind {
			return errors.New("no such device")
		}
		return os.Mkdir(filepath.Join(filepath.Dir(path), data), 0o755)
	case "remove":
		dev := filepath.Dir(path)
		if err := os.Remove(filepath.Join(f.root, "bus", "pci", "devices", filepath.Base(dev))); err != nil {
			return err
		}
		return os.RemoveAll(dev)
	case "rescan":
		if f.plugged && filepath.Base(filepath.Dir(path)) == sharePort {
			f.device(filepath.Dir(path), shareDev, virtiofsDevice)
		}
	}
	return nil
}

// writeConfig records the slot control written; QEMU's side is the test's.
func (f *fakeSlots) writeConfig(path string, b []byte, at int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if at != slotCtlOff || len(b) != 2 {
		f.t.Errorf("config write of %d bytes at %#x, want the slot control", len(b), at)
	}
	f.ops = append(f.ops, fmt.Sprintf("%s@slotctl=%#04x", filepath.Base(filepath.Dir(path)), binary.LittleEndian.Uint16(b)&(slotCtlPIC|slotCtlPCC)))
	cfg, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	copy(cfg[at:], b)
	return os.WriteFile(path, cfg, 0o644)
}

func (f *fakeSlots) written() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// An eject takes the share's slot from pciehp, removes the device, powers
// the slot off (QEMU's cue to let the device go: its power and indicator
// both off) and gives the slot back to pciehp, in that order; it leaves
// alone a device on a slot without power control and every other device.
// With pciehp back on the slot, a rescan has nothing to do.
func TestEjectHandsTheShareBack(t *testing.T) {
	f := newFakeSlots(t)
	sl := f.slots()
	n, err := sl.eject()
	if err != nil || n != 1 {
		t.Fatalf("eject: %d, %v; want 1 device", n, err)
	}
	hp := "bus/pci_express/drivers/pciehp/"
	want := []string{
		hp + "unbind=" + sharePort + ":pcie004",
		"devices/pci0000:00/" + sharePort + "/" + shareDev + "/remove=1",
		sharePort + "@slotctl=0x0700",
		hp + "bind=" + sharePort + ":pcie004",
	}
	if got := f.written(); !slices.Equal(got, want) {
		t.Errorf("eject wrote\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, port := range []string{sharePort, plainPort} {
		if _, err := os.Stat(filepath.Join(f.root, hp, port+":pcie004")); err != nil {
			t.Errorf("pciehp does not drive %s after the eject", port)
		}
	}
	before := len(f.written())
	if looked, err := sl.rescan(); looked || err != nil || len(f.written()) != before {
		t.Errorf("a rescan with every slot pciehp's: looked %v, %v, wrote %q", looked, err, f.written()[before:])
	}
}

// A slot pciehp does not take back is powered on, empty, and a rescan
// looks behind it until the host's device is there, then no more.
func TestEjectWithoutPciehpRescansTheSlot(t *testing.T) {
	f := newFakeSlots(t)
	f.failBind = true
	sl := f.slots()
	if n, err := sl.eject(); err != nil || n != 1 {
		t.Fatalf("eject: %d, %v; want the device handed back", n, err)
	}
	if got := f.written(); len(got) != 5 || got[4] != sharePort+"@slotctl=0x0100" {
		t.Errorf("eject wrote %q, want the slot powered on last", got)
	}
	before := len(f.written())
	if looked, err := sl.rescan(); !looked || err != nil {
		t.Fatalf("rescan before the plug: looked %v, %v", looked, err)
	}
	rescan := "devices/pci0000:00/" + sharePort + "/rescan=1"
	if got := f.written()[before:]; !slices.Equal(got, []string{rescan}) {
		t.Errorf("rescan before the plug wrote %q, want %q", got, rescan)
	}
	f.plugged = true
	if _, err := sl.rescan(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, "bus", "pci", "devices", shareDev)); err != nil {
		t.Fatal("the rescan did not bring the device")
	}
	before = len(f.written())
	if looked, err := sl.rescan(); looked || err != nil || len(f.written()) != before {
		t.Errorf("a rescan with the device back: looked %v, %v, wrote %q", looked, err, f.written()[before:])
	}
}

// The eject call refuses while a virtiofs share is mounted, doing
// nothing: its users would lose it.
func TestShareEjectRefusesAMountedShare(t *testing.T) {
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mountinfo := filepath.Join(proc, "self", "mountinfo")
	ejects := 0
	s := New(Options{Logger: slog.New(slog.DiscardHandler), Share: &ShareSystem{ProcRoot: proc, Eject: func() (int, error) { ejects++; return 1, nil }}})
	if err := os.WriteFile(mountinfo, []byte("36 25 0:45 / /workspace rw,relatime shared:20 - virtiofs workspace rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.shareEject(); err == nil || !strings.Contains(err.Error(), `still mounted at "/workspace"`) {
		t.Errorf("eject with /workspace mounted: %v", err)
	}
	if ejects != 0 {
		t.Error("ejected a mounted share")
	}
	if err := os.WriteFile(mountinfo, []byte("36 25 0:45 / /data rw,relatime shared:20 - ext4 /dev/vdb rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := s.shareEject()
	if err != nil || r.Ejected != 1 || ejects != 1 {
		t.Errorf("eject with no share mounted: %+v, %v (%d calls)", r, err, ejects)
	}
}

// A mount whose tag is missing rescans the slots and tries again at
// once: a device plugged in behind an ejected port shows only after a
// rescan, and a resume waits on this mount.
func TestShareMountRescansForItsDevice(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(ws2Mount)
	f.s.share.retryEvery, f.s.share.retryFor = 10*time.Millisecond, 50*time.Millisecond
	rescanned := false
	f.s.share.rescan = func() (bool, error) { rescanned = true; return true, nil }
	mounts := 0
	f.s.share.mount = func(string, string, bool) error {
		mounts++
		if !rescanned {
			return syscall.ENODEV
		}
		return nil
	}
	if rep := mountCall(t, f.s, "workspace", "/workspace"); rep.ShareMount == nil || rep.Error != "" {
		t.Fatalf("reply %+v", rep)
	}
	if mounts != 2 {
		t.Errorf("%d mounts, want 2: before and after the rescan", mounts)
	}
}
