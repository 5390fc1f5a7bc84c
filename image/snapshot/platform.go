package snapshot

import (
	"errors"
	"runtime"
)

// errNoLayers refuses a snapshot where the VM cannot boot one: on macOS
// cowork runs the guest under Virtualization.framework, which takes raw
// disks only, and a snapshot turns the disk into a qcow2 overlay that no
// restore or removal could turn back.
var errNoLayers = errors.New("snapshots keep an instance's disk as qcow2 layers, which macOS's Virtualization.framework cannot boot; they work under QEMU (Linux) for now")

// Supported says whether this host's backend boots qcow2 layers: nil, or
// why snapshots are refused here.
func Supported() error {
	if runtime.GOOS == "darwin" {
		return errNoLayers
	}
	return nil
}
