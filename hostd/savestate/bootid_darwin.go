package savestate

import "golang.org/x/sys/unix"

// HostBootID identifies this boot of the host: a state saved before a
// reboot is refused (the issue asks for a cold boot then).
func HostBootID() (string, error) { return unix.Sysctl("kern.bootsessionuuid") }
