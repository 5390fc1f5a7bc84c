package fsjail

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ambient are the capabilities the file server holds inside its namespace
// (and nowhere else: a namespace's capabilities never reach the host's
// own): what virtiofsd needs to build its sandbox (mount, pid and network
// namespaces, pivot_root, dropping its bounding set) and to act for any
// guest user on the owner's files. Not CAP_MKNOD, not CAP_SETFCAP: the
// guest gets neither device nodes nor file capabilities, whatever the
// namespace would allow.
var ambient = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH, unix.CAP_FOWNER, unix.CAP_FSETID,
	unix.CAP_KILL, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETPCAP, unix.CAP_SYS_CHROOT, unix.CAP_SYS_ADMIN,
}

// sysProcAttr puts the shim in a user namespace where the guest's user is
// the owner and no other identity exists: not root, so nothing the server
// does on the host's files can be more than the owner's.
//
// The child becomes that identity inside the namespace, which makes it the
// owner on the host: a mapping alone names identities, it does not change
// the process's own (root's child would stay host root). Root's child also
// drops the supplementary groups it inherits; an unprivileged user's stay
// (the kernel refuses setgroups in its namespace), as they are its own.
func sysProcAttr(c Config) *syscall.SysProcAttr {
	root := os.Getuid() == 0
	flags := uintptr(syscall.CLONE_NEWUSER)
	if c.ReadOnly {
		// A mount namespace owned by the new user namespace: the read-only
		// bind made in it is seen by the file server alone.
		flags |= syscall.CLONE_NEWNS
	}
	return &syscall.SysProcAttr{
		Cloneflags:                 flags,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: c.GuestUID, HostID: c.UID, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: c.GuestGID, HostID: c.GID, Size: 1}},
		GidMappingsEnableSetgroups: root,
		Credential:                 &syscall.Credential{Uid: uint32(c.GuestUID), Gid: uint32(c.GuestGID), Groups: []uint32{}, NoSetGroups: !root},
		AmbientCaps:                ambient,
	}
}

// Main is the shim: args are NFDS RODIR PROGRAM ARGS (see Arg). It makes
// RODIR read-only, if given, installs the filter and replaces itself with
// the program, which inherits stdio and the NFDS descriptors after it,
// nothing else (not this binary's). It returns only on failure; the
// caller prints the error and exits.
func Main(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("%s: want NFDS RODIR PROGRAM [ARGS...]", Arg)
	}
	nfds, err := strconv.Atoi(args[0])
	if err != nil || nfds < 0 {
		return fmt.Errorf("%s: %q is not a number of descriptors", Arg, args[0])
	}
	roDir, argv := args[1], args[2:]
	if roDir != "" {
		if err := bindReadOnly(roDir); err != nil {
			return err
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	if err := unix.CloseRange(uint(3+nfds), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close inherited descriptors: %w", err)
	}
	// The filter and no_new_privs are set on this thread and synced to the
	// others; execve must then run on this very thread.
	runtime.LockOSThread()
	if err := install(Filter(roDir != "")); err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

// bindReadOnly binds dir onto itself, read-only with every mount under
// it, in the jail's mount namespace (see sysProcAttr), whose changes never
// reach the host's (slave propagation). The bind is private: a file system
// the host mounts under dir later (a USB disk, an automount) does not
// appear in it, writable, as a slave's would.
func bindReadOnly(dir string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("read-only share: keep the jail's mounts to itself: %w", err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("read-only share: bind %s: %w", dir, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY, Propagation: unix.MS_PRIVATE}
	if err := unix.MountSetattr(unix.AT_FDCWD, dir, unix.AT_RECURSIVE, &attr); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return errors.New("read-only share: this kernel has no mount_setattr (Linux 5.12 or newer has it); share the folder read-write, or upgrade")
		}
		return fmt.Errorf("read-only share: make %s read-only: %w", dir, err)
	}
	return nil
}

// install sets no_new_privs and loads the filter on every thread.
func install(prog []unix.SockFilter) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}
