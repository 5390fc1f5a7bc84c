// Package vz runs a machine.Config under Apple's Virtualization.framework
// through github.com/Code-Hex/vz/v3. The vz calls live in *_darwin.go files
// and only translate; every decision (what is checked, which devices, which
// modes, what an error means for the user) is made here, in portable code
// that Linux CI tests. `make check-darwin` type-checks the darwin half
// against vz's exact API.
package vz

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/image/inspect"
)

// MinMacOS is the oldest macOS cowork runs guests on: the generic
// platform's machine identifier, the file-handle network's MTU and
// EFI boot all need 13.
const MinMacOS = 13

// Limits are what vz allows on this Mac (VZVirtualMachineConfiguration's
// minimum and maximum CPU count and memory size).
type Limits struct {
	MinCPUs, MaxCPUs     uint
	MinMemory, MaxMemory uint64
}

// Disk is one virtio block device.
type Disk struct {
	Path     string
	ReadOnly bool
	// Cached with fsync for the root disk: vz's automatic caching mode has
	// corrupted guest disks for others (lima-vm/lima#2110 and friends).
	Cached bool
}

// Plan is the VM as the darwin code builds it, device by device.
type Plan struct {
	CPUs   uint
	Memory uint64

	// Kernel set: VZLinuxBootLoader. Otherwise VZEFIBootLoader with its
	// variable store at EFIVars (created when CreateEFIVars).
	Kernel, Initrd, Cmdline string
	EFIVars                 string
	CreateEFIVars           bool

	// MachineID is the generic platform's identifier file; a new identifier
	// is made and saved there when it does not exist yet, or is unusable
	// (machineID). MachineIDData is its content, which the framework has
	// read as an identifier: set when the VM is launched.
	MachineID     string
	MachineIDData []byte

	Disks []Disk
	// Shares are virtio-fs devices, one per folder; vz serves a read-only
	// one read-only itself.
	Shares []machine.Share

	Network *os.File
	MAC     net.HardwareAddr
	MTU     int

	// Console receives the guest's serial console (the pipe hostd drains),
	// ConsoleIn is what vz reads the console's input from; both are the
	// VM's own descriptors (see ownConsole).
	Console, ConsoleIn *os.File

	// Entropy and Balloon add a virtio entropy device and a memory
	// balloon: only on a Mac that cannot save a VM anyway (macOS 13).
	// From macOS 14 on they are left out so that the VM can be saved:
	// tart leaves the entropy device out of its suspendable VMs, as
	// Virtualization.framework refuses to save some devices, and its
	// documentation does not say which. The guest loses little: its
	// kernel seeds its random generator from CPU jitter, and hostd never
	// drives the balloon.
	Entropy, Balloon bool
}

// NewPlan checks the config against this Mac (its macOS version, its
// architecture and vz's limits) and the images against the guest
// architecture, and lays out the devices.
func NewPlan(c machine.Config, hostArch string, macOS string, l Limits) (*Plan, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := CheckMacOS(macOS); err != nil {
		return nil, err
	}
	major, _ := macOSMajor(macOS) // CheckMacOS read it
	if c.Arch != hostArch {
		return nil, fmt.Errorf("this instance is for %s, but Virtualization.framework runs only guests of the Mac's own architecture (%s): recreate it with `cowork init --arch %s`", c.Arch, hostArch, hostArch)
	}
	if uint(c.CPUs) < l.MinCPUs || uint(c.CPUs) > l.MaxCPUs {
		return nil, fmt.Errorf("%d CPUs is outside what this Mac allows a VM (%d to %d): recreate the instance with --cpus in that range", c.CPUs, l.MinCPUs, l.MaxCPUs)
	}
	if uint64(c.Memory) < l.MinMemory || uint64(c.Memory) > l.MaxMemory {
		return nil, fmt.Errorf("%d MiB of memory is outside what this Mac allows a VM (%d to %d MiB): recreate the instance with --memory in that range",
			c.Memory>>20, l.MinMemory>>20, l.MaxMemory>>20)
	}
	if c.DiskFormat != "" && c.DiskFormat != "raw" {
		return nil, fmt.Errorf("the disk %s is %s; Virtualization.framework takes raw disks only: recreate the instance on this Mac (its golden disks are raw clones)", c.Disk, c.DiskFormat)
	}
	if err := checkImages(c); err != nil {
		return nil, err
	}
	p := &Plan{
		CPUs: uint(c.CPUs), Memory: uint64(c.Memory),
		Kernel: c.Kernel, Initrd: c.Initrd, Cmdline: c.Cmdline,
		MachineID: c.MachineID,
		Disks:     []Disk{{Path: c.Disk, Cached: true}},
		Shares:    c.Shares,
		Network:   c.Network, MAC: c.MAC, MTU: c.MTU,
		Console: c.Console,
		Entropy: major < SaveMacOS, Balloon: major < SaveMacOS,
	}
	if p.MTU == 0 {
		p.MTU = 1500
	}
	if c.Kernel == "" {
		p.EFIVars = c.EFIVars
		if _, err := os.Stat(c.EFIVars); errors.Is(err, os.ErrNotExist) {
			p.CreateEFIVars = true
		}
	}
	if c.CIData != "" {
		p.Disks = append(p.Disks, Disk{Path: c.CIData, ReadOnly: true})
	}
	return p, nil
}

// checkImages refuses a kernel or disk of the wrong architecture, and a
// compressed kernel, which vz cannot boot.
func checkImages(c machine.Config) error {
	if c.Kernel != "" {
		k, err := inspect.KernelInfo(c.Kernel)
		switch {
		case err == nil && k.Arch != c.Arch:
			return fmt.Errorf("the kernel %s is for %s, not %s: use a %s kernel", c.Kernel, k.Arch, c.Arch, c.Arch)
		case k.Compressed:
			return fmt.Errorf("the kernel %s is compressed, and Virtualization.framework boots only an uncompressed arm64 Image: decompress it (e.g. `gunzip -c vmlinuz > Image`, or extract-vmlinux for an EFI zboot kernel) and pass that", c.Kernel)
		case err != nil && !errors.Is(err, inspect.ErrArchUnknown):
			return err
		}
		return nil
	}
	arch, err := inspect.DiskArch(c.Disk)
	switch {
	case err == nil && arch != c.Arch:
		return fmt.Errorf("the disk %s boots %s, not %s: use an image for %s (for Ubuntu, the %s cloud image)", c.Disk, arch, c.Arch, c.Arch, c.Arch)
	case err != nil && !errors.Is(err, inspect.ErrArchUnknown):
		return err
	}
	return nil
}

// macOSMajor is the major version in kern.osproductversion ("14.6.1").
func macOSMajor(version string) (int, error) {
	major, err := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("cannot tell the macOS version from %q", version)
	}
	return major, nil
}

// CheckMacOS refuses macOS versions vz cannot run our guest on. version is
// kern.osproductversion, e.g. "14.6.1".
func CheckMacOS(version string) error {
	major, err := macOSMajor(version)
	if err != nil {
		return err
	}
	if major < MinMacOS {
		return fmt.Errorf("macOS %s is too old: cowork needs macOS %d (Ventura) or newer for Virtualization.framework's generic platform and EFI boot; update macOS, or run cowork on Linux", version, MinMacOS)
	}
	return nil
}

// ErrNoEntitlement is a vz error saying the binary lacks the
// virtualization entitlement: it was built but not signed.
var ErrNoEntitlement = errors.New("this cowork binary is not signed with the com.apple.security.virtualization entitlement: run `make` (it signs ad hoc), or `codesign --force --entitlements entitlements.plist -s - bin/cowork`")

// Explain turns what Virtualization.framework reports into what the user
// should do; errors it does not know pass through with their text.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "com.apple.security.virtualization"):
		return fmt.Errorf("%w (vz: %s)", ErrNoEntitlement, msg)
	case strings.Contains(msg, "unsupported macOS version"):
		return fmt.Errorf("this needs a newer macOS than this Mac runs (vz: %s)", msg)
	}
	return err
}

// checkValid reads what VZVirtualMachineConfiguration's validate says.
// It can say no without an error; the user still needs a next step.
func checkValid(ok bool, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("the VM configuration is invalid: %w", Explain(err))
	case !ok:
		return errors.New("the VM configuration was rejected by Virtualization.framework without saying why (vz validate returned false and no error); please report it with the instance's hostd.log")
	}
	return nil
}
