package vz

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ownNetwork returns a duplicate of the VM's end of the socketpair for the
// VM to keep. vz's file-handle attachment wraps the bare descriptor
// (NSFileHandle initWithFileDescriptor, which neither copies nor owns it),
// while hostd closes its own *os.File once Start returns, as the QEMU
// backend's child holds an inherited copy; without a duplicate of its own
// the guest's NIC would be a closed, later reused, descriptor. The
// duplicate is close-on-exec so no child of hostd inherits the NIC.
func ownNetwork(f *os.File) (*os.File, error) { return dupFile(f, "network") }

// dupFile duplicates f's descriptor, close-on-exec; what names it in errors.
func dupFile(f *os.File, what string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%s descriptor %s: %w", what, f.Name(), err)
	}
	fd := -1
	var dupErr error
	// Control, not Fd: Fd would switch the socket to blocking mode.
	if err := rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("%s descriptor %s: %w", what, f.Name(), err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("duplicate the %s descriptor %s: %w", what, f.Name(), dupErr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
