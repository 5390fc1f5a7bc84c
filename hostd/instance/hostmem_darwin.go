package instance

import (
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/units"
)

// HostMemory is the machine's physical memory, 0 if unknown.
func HostMemory() units.Size {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil {
		return 0
	}
	return units.Size(n)
}
