package machine

import (
	"context"
	"path/filepath"
)

// Saver is a Machine that can write its running guest to disk, memory and
// devices, and resume it later where it was: what `cowork suspend` needs
// (hostd checks for it: a backend without it only cold-boots). The order
// of a save is hostd's: the guest unmounts the share (through its agent),
// DetachShare, Save, then Stop(ctx, 0); a resume is Restore, Continue,
// AttachShare, and the guest mounts the share again.
type Saver interface {
	// DetachShare unplugs the share's device from the running guest, which
	// must have unmounted it: QEMU 7.2 cannot save a guest with a virtiofs
	// device attached. It returns once the guest has let the device go,
	// or fails (within a bound) with the device still attached. eject,
	// when not nil, asks the guest to hand the devices back at once (its
	// agent's ShareEject); a backend that unplugs calls it first, and
	// whatever it did not hand back is asked for the usual way.
	DetachShare(ctx context.Context, eject func(context.Context) error) error
	// AttachShare plugs the share back in, for the guest to mount.
	AttachShare(ctx context.Context) error
	// Save pauses the guest and writes it to dir (made if missing; it must
	// not hold a saved guest already), all flushed to disk. The guest stays
	// paused: Stop(ctx, 0) ends it, Continue runs it on (a snapshot). When
	// Save fails, the guest runs on as before and dir holds nothing.
	Save(ctx context.Context, dir string) (*Saved, error)
	// Restore is Start for a saved guest: the machine, made with the
	// Config the guest was saved with (the share detached), loads it and
	// returns with it Paused, so that the caller can retire the saved
	// state before the guest runs on and its disk moves away from it.
	Restore(ctx context.Context, s *Saved) error
	// Continue runs a paused guest on.
	Continue(ctx context.Context) error
	// Identity is what a saved guest depends on of this machine and its
	// host, as it would run now: a state saved under one identity is
	// resumed only under the same (hostd's manifest, hostd/savestate).
	Identity(ctx context.Context) (Identity, error)
}

// Identity is a machine's hypervisor and device layout, as far as a saved
// guest depends on them.
type Identity struct {
	// Binary is the hypervisor's executable (QEMU's path), whose build
	// hostd records by its digest; Version is what it says it is.
	Binary, Version string
	// Firmware is the firmware the guest runs (its EFI code), digested
	// the same way; empty for a guest that boots its kernel directly.
	Firmware string
	// Devices is the VM's device layout in a form that changes when the
	// layout does (QEMU: a digest of its arguments).
	Devices string
}

// Saved is a guest a Saver wrote: the files in Dir, and what they were
// made with.
type Saved struct {
	Dir    string
	Memory int64 // the guest's RAM, bytes: RAMFile's size
	// Files names the backend's files in Dir (QEMU: DeviceStateFile and
	// RAMFile; vz: its one state file), which hostd's manifest records
	// with their sizes. Empty means QEMU's two.
	Files []string
}

// FileNames is Files, or QEMU's two files when the backend named none.
func (s *Saved) FileNames() []string {
	if len(s.Files) == 0 {
		return []string{DeviceStateFile, RAMFile}
	}
	return s.Files
}

// The files of a saved guest in its directory.
const (
	// DeviceStateFile is the hypervisor's own state of the devices and CPUs.
	DeviceStateFile = "device.state"
	// RAMFile is the guest's memory, a sparse file as big as the memory:
	// the pages the guest never touched (or left zero) are holes.
	RAMFile = "ram"
)

// DeviceState is the path of the saved devices' state.
func (s *Saved) DeviceState() string { return filepath.Join(s.Dir, DeviceStateFile) }

// RAM is the path of the saved memory.
func (s *Saved) RAM() string { return filepath.Join(s.Dir, RAMFile) }
