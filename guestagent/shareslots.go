package guestagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// A share's device sits behind a PCIe root port of its own (QEMU's
// pcie-root-port), and it comes and goes around a save: QEMU 7.2 cannot
// save a guest with a vhost-user-fs device attached. Left to the
// kernel's hotplug driver, pciehp, the unplug that QEMU's device_del asks
// for waits out the attention button's 5 s (the user's chance to cancel)
// and a power-off's 1 s. ShareEject does it at once instead, through
// sysfs: the agent takes the slot from pciehp, removes the device, and
// powers the slot off, which QEMU takes as the device's release; then it
// gives the empty slot back to pciehp, which plugs the next device in as
// before. A slot pciehp does not take back is powered on and left to
// ShareMount's rescan.

// shareSlots is the sysfs the slots are driven through; tests use a
// tree of their own and watch the writes.
type shareSlots struct {
	root        string                                      // "/sys"
	write       func(path, data string) error               // a sysfs attribute write
	writeConfig func(path string, b []byte, at int64) error // a write in a config space

	mu    sync.Mutex
	stray []string // emptied ports pciehp did not take back: rescan looks there

	// rescanning is held through a rescan: a second one waits for the
	// first, then finds the device it brought, rather than scanning again.
	rescanning sync.Mutex
}

func realShareSlots() *shareSlots {
	return &shareSlots{root: "/sys", write: writeAttr, writeConfig: writeConfigAt}
}

// writeAttr writes data to a sysfs attribute, which takes it in one write.
func writeAttr(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// The virtiofs device (modern virtio-pci: 0x1040 + virtio's device type
// 26).
const (
	virtioVendor   = "0x1af4"
	virtiofsDevice = "0x105a"
)

// pciAddr is a PCI function's sysfs name, as 0000:01:00.0.
var pciAddr = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// PCI Express capability registers (offsets in the capability) and the
// bits of its slot's that the slots are driven by.
const (
	capPCIe        = 0x10
	expSlotCap     = 0x14
	expSlotCtl     = 0x18
	slotCapPower   = 0x0002 // a power controller
	slotCapHotplug = 0x0040
	slotCtlPIC     = 0x0300 // the power indicator: 01 on, 11 off
	slotCtlPICOn   = 0x0100
	slotCtlPCC     = 0x0400 // set: the slot's power is off
)

// eject hands back every virtiofs device behind a hot-plug slot the
// agent can drive (a port with a power controller): see ejectFrom. It
// says how many went; a device it cannot drive is left to pciehp and the
// host's unplug request.
func (sl *shareSlots) eject() (int, error) {
	devs, err := filepath.Glob(filepath.Join(sl.root, "bus", "pci", "devices", "*"))
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, dev := range devs {
		if !pciAddr.MatchString(filepath.Base(dev)) || attr(dev, "vendor") != virtioVendor || attr(dev, "device") != virtiofsDevice {
			continue
		}
		real, err := filepath.EvalSymlinks(dev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		port := filepath.Dir(real)
		if !pciAddr.MatchString(filepath.Base(port)) || !sl.drivable(port) {
			continue // on a bus of its own, or a slot without power control
		}
		if err := sl.ejectFrom(port, real); err != nil {
			errs = append(errs, fmt.Errorf("eject %s: %w", filepath.Base(real), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// ejectFrom takes port's slot from pciehp, removes dev from the kernel,
// powers the slot off (QEMU unplugs the device) and gives the slot back
// to pciehp. A slot pciehp does not take back is powered on, for the
// next device to be live at once, and remembered for rescan.
func (sl *shareSlots) ejectFrom(port, dev string) error {
	drivers := filepath.Join(sl.root, "bus", "pci_express", "drivers", "pciehp")
	services, _ := filepath.Glob(filepath.Join(drivers, filepath.Base(port)+":pcie*"))
	for _, svc := range services {
		if err := sl.write(filepath.Join(drivers, "unbind"), filepath.Base(svc)); err != nil {
			return fmt.Errorf("take the slot from pciehp: %w", err)
		}
	}
	bind := func() (err error) {
		for _, svc := range services {
			err = errors.Join(err, sl.write(filepath.Join(drivers, "bind"), filepath.Base(svc)))
		}
		return err
	}
	// Cut short, the slot goes back to pciehp, which the host's unplug
	// request then goes through, as it would have without an eject.
	if err := sl.write(filepath.Join(dev, "remove"), "1"); err != nil {
		_ = bind()
		return fmt.Errorf("remove the device: %w", err)
	}
	if err := sl.power(port, false); err != nil {
		_ = bind()
		return fmt.Errorf("power the slot off: %w", err)
	}
	bindErr := bind()
	if len(services) > 0 && bindErr == nil {
		return nil
	}
	if err := sl.power(port, true); err != nil {
		return errors.Join(bindErr, fmt.Errorf("power the empty slot on: %w", err))
	}
	sl.mu.Lock()
	if !slices.Contains(sl.stray, port) {
		sl.stray = append(sl.stray, port)
	}
	sl.mu.Unlock()
	return nil // the device was handed back; the next comes through rescan
}

// rescan has the kernel look behind the emptied ports pciehp did not take
// back, for a device plugged in since, and says whether it looked. It
// costs nothing when there are none (the usual case), and ShareMount
// calls it after each try of a tag that is not there yet.
func (sl *shareSlots) rescan() (bool, error) {
	sl.rescanning.Lock()
	defer sl.rescanning.Unlock()
	sl.mu.Lock()
	ports := slices.Clone(sl.stray)
	sl.mu.Unlock()
	var errs []error
	for _, port := range ports {
		if !hasChild(port) {
			if err := sl.write(filepath.Join(port, "rescan"), "1"); err != nil {
				errs = append(errs, fmt.Errorf("rescan %s: %w", filepath.Base(port), err))
				continue
			}
		}
		if hasChild(port) {
			sl.mu.Lock()
			sl.stray = slices.DeleteFunc(sl.stray, func(p string) bool { return p == port })
			sl.mu.Unlock()
		}
	}
	return len(ports) > 0, errors.Join(errs...)
}

// attr is a sysfs attribute's value, trimmed; "" when it cannot be read.
func attr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// hasChild says whether a device sits behind port.
func hasChild(port string) bool {
	entries, err := os.ReadDir(port)
	if err != nil {
		return true // unknown: leave it be
	}
	for _, e := range entries {
		if e.IsDir() && pciAddr.MatchString(e.Name()) {
			return true
		}
	}
	return false
}

// slotRegs finds port's PCI Express capability in its config space and
// reads its slot's capabilities and control.
func slotRegs(port string) (capAt int64, slotCap uint32, slotCtl uint16, err error) {
	f, err := os.Open(filepath.Join(port, "config"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	var cfg [256]byte
	if _, err := io.ReadFull(f, cfg[:]); err != nil {
		return 0, 0, 0, fmt.Errorf("read the config space: %w", err)
	}
	// The capability list: at most 48 entries fit in 256 bytes, and a
	// loop in it must not hold the agent.
	for p, hops := int(cfg[0x34])&^3, 0; p >= 0x40 && p < 0xff && hops < 48; p, hops = int(cfg[p+1])&^3, hops+1 {
		if cfg[p] != capPCIe {
			continue
		}
		if p+expSlotCtl+2 > len(cfg) {
			break
		}
		return int64(p), binary.LittleEndian.Uint32(cfg[p+expSlotCap:]), binary.LittleEndian.Uint16(cfg[p+expSlotCtl:]), nil
	}
	return 0, 0, 0, errors.New("no PCI Express capability")
}

// drivable says whether port has a hot-plug slot with a power controller.
func (sl *shareSlots) drivable(port string) bool {
	_, slotCap, _, err := slotRegs(port)
	return err == nil && slotCap&slotCapHotplug != 0 && slotCap&slotCapPower != 0
}

// power turns port's slot power, and its indicator, on or off.
func (sl *shareSlots) power(port string, on bool) error {
	at, _, ctl, err := slotRegs(port)
	if err != nil {
		return err
	}
	ctl &^= slotCtlPIC | slotCtlPCC
	if on {
		ctl |= slotCtlPICOn
	} else {
		ctl |= slotCtlPIC | slotCtlPCC
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], ctl)
	return sl.writeConfig(filepath.Join(port, "config"), b[:], at+expSlotCtl)
}

// writeConfigAt writes b at off in a config space file.
func writeConfigAt(path string, b []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
