package instance

import (
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/units"
)

// HostMemory is the machine's physical memory, 0 if unknown.
func HostMemory() units.Size {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return units.Size(uint64(si.Totalram) * uint64(si.Unit))
}
