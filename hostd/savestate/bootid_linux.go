package savestate

import (
	"os"
	"strings"
)

// HostBootID identifies this boot of the host: a state saved before a
// reboot is refused (the issue asks for a cold boot then).
func HostBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b)), err
}
