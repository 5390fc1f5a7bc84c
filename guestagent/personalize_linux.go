package guestagent

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RealPersonalize changes the guest the agent runs in (its main's).
func RealPersonalize() *PersonalizeSystem {
	return &PersonalizeSystem{Reseed: reseed, SetMachineID: setMachineID, SetHostname: setHostname}
}

// reseed credits seed to the kernel's pool (RNDADDENTROPY, which needs
// CAP_SYS_ADMIN) and has the CRNG reseed from it at once
// (RNDRESEEDCRNG), rather than at its next interval.
func reseed(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(seed)))
	copy(info[8:], seed)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return os.NewSyscallError("RNDADDENTROPY", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return os.NewSyscallError("RNDRESEEDCRNG", e)
	}
	return nil
}

// setMachineID replaces /etc/machine-id, and D-Bus's copy when it is a
// file of its own.
func setMachineID(id string) error {
	if err := replaceFile("/etc/machine-id", id+"\n", 0o444); err != nil {
		return err
	}
	if st, err := os.Lstat("/var/lib/dbus/machine-id"); err == nil && st.Mode().IsRegular() {
		return replaceFile("/var/lib/dbus/machine-id", id+"\n", 0o444)
	}
	return nil
}

func setHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return err
	}
	return replaceFile("/etc/hostname", name+"\n", 0o644)
}

// replaceFile writes path anew through a rename, so that no reader sees
// it half written.
func replaceFile(path, data string, mode os.FileMode) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".cowork")
	if err := os.WriteFile(tmp, []byte(data), mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
