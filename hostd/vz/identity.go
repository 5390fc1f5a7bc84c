package vz

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coworkhq/cowork/hostd/machine"
)

// What a guest saved by vz depends on (machine.Identity): the framework
// that runs it, the macOS it is part of, and the VM's device layout. A
// saved state is resumed only under the same identity (hostd/savestate).

// identity is what a guest saved under this macOS (product version and
// build) with plan's devices depends on; stat finds the framework's files.
func identity(product, build string, plan *Plan, stat func(string) (os.FileInfo, error)) (machine.Identity, error) {
	version, err := osVersion(product, build)
	if err != nil {
		return machine.Identity{}, err
	}
	bin, err := frameworkBinary(frameworkBinaries, stat)
	if err != nil {
		return machine.Identity{}, err
	}
	mid, err := readMachineID(plan.MachineID)
	if err != nil {
		return machine.Identity{}, err
	}
	return machine.Identity{Binary: bin, Version: version, Devices: deviceDigest(plan, mid)}, nil
}

// frameworkBinaries are where the framework's code may be on disk, in the
// order tried; Identity's Binary is the first that is a regular file
// (hostd records its digest). Since macOS 11 a framework's own binary
// lives in the dyld shared cache, not on disk, so the framework's path is
// followed by its VM service (the XPC executable that runs the guest, and
// writes and reads the saved state), and by the OS's version record,
// which changes with every update of macOS, the Rapid Security Responses
// included: one of them is always there.
var frameworkBinaries = []string{
	"/System/Library/Frameworks/Virtualization.framework/Virtualization",
	"/System/Library/Frameworks/Virtualization.framework/Versions/A/XPCServices/com.apple.Virtualization.VirtualMachine.xpc/Contents/MacOS/com.apple.Virtualization.VirtualMachine",
	"/System/Library/CoreServices/SystemVersion.plist",
}

// frameworkBinary is the first of candidates that stat says is a regular
// file (following symlinks: the framework's path is one).
func frameworkBinary(candidates []string, stat func(string) (os.FileInfo, error)) (string, error) {
	for _, c := range candidates {
		if st, err := stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("none of Virtualization.framework's files is on this Mac (%s): cowork cannot tell which framework would resume a saved guest", strings.Join(candidates, ", "))
}

// osVersion is the macOS a state is saved under: the product version
// (kern.osproductversion) and the build (kern.osversion), which a
// security update changes when the product version stays.
func osVersion(product, build string) (string, error) {
	product, build = strings.TrimSpace(product), strings.TrimSpace(build)
	if product == "" || build == "" {
		return "", fmt.Errorf("macOS did not say its version (%q) and build (%q)", product, build)
	}
	return fmt.Sprintf("macOS %s (%s)", product, build), nil
}

// maxMachineID bounds the machine identifier file read: vz's
// dataRepresentation is a few dozen bytes.
const maxMachineID = 4 << 10

// readMachineID is the generic platform's identifier as saved in path:
// nil when there is none yet (a VM that never booted).
func readMachineID(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the machine identifier: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMachineID+1))
	if err != nil {
		return nil, fmt.Errorf("the machine identifier %s: %w", path, err)
	}
	if len(b) > maxMachineID {
		return nil, fmt.Errorf("the machine identifier %s is over %d bytes: not one vz wrote", path, maxMachineID)
	}
	return b, nil
}

// deviceLayout is the plan's devices in a canonical text, one device a
// line: everything a saved guest depends on (its CPUs, memory, boot,
// platform and machine identifier, disks, share, NIC and its MAC, and the
// devices every cowork VM has), and nothing of one run (the descriptors of
// the NIC and the console, whether the EFI store is made now). Strings are
// quoted, so no path can forge a line. machineID is the identifier's
// data: Apple's restore needs the same one, and a state resumed under
// another fails ("invalid argument", tart #1297).
func deviceLayout(p *Plan, machineID []byte) string {
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	line("cowork-vz-devices 1")
	line("cpus %d", p.CPUs)
	line("memory %d", p.Memory)
	if p.Kernel != "" {
		line("boot linux kernel=%q initrd=%q cmdline=%q", p.Kernel, p.Initrd, p.Cmdline)
	} else {
		line("boot efi vars=%q", p.EFIVars)
	}
	id := sha256.Sum256(machineID)
	line("platform generic machine-id-file=%q machine-id=%x present=%t", p.MachineID, id, machineID != nil)
	for i, d := range p.Disks {
		line("disk %d virtio-blk path=%q read-only=%t cached-fsync=%t", i, d.Path, d.ReadOnly, d.Cached)
	}
	for _, sh := range p.Shares {
		line("share virtio-fs tag=%q dir=%q read-only=%t", sh.Tag, sh.Dir, sh.ReadOnly)
	}
	line("nic virtio-net file-handle mac=%q mtu=%d", p.MAC.String(), p.MTU)
	line("vsock virtio")
	line("serial virtio-console file-handle")
	line("entropy %t", p.Entropy)
	line("balloon %t", p.Balloon)
	return b.String()
}

// deviceDigest is the sha256 of deviceLayout: Identity's Devices.
func deviceDigest(p *Plan, machineID []byte) string {
	sum := sha256.Sum256([]byte(deviceLayout(p, machineID)))
	return hex.EncodeToString(sum[:])
}
