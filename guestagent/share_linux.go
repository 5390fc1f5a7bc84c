package guestagent

import "golang.org/x/sys/unix"

func syncAll() { unix.Sync() }

// unmountShare unmounts dir, which mountinfo names as a mount point;
// force detaches it lazily (MNT_DETACH) instead of failing with EBUSY
// while it is in use. It never follows a symlink at dir.
func unmountShare(dir string, force bool) error {
	flags := unix.UMOUNT_NOFOLLOW
	if force {
		flags |= unix.MNT_DETACH
	}
	return unix.Unmount(dir, flags)
}

// mountVirtiofs mounts the virtiofs share tag at dir, without options but
// read-only.
func mountVirtiofs(tag, dir string, readOnly bool) error {
	var flags uintptr
	if readOnly {
		flags = unix.MS_RDONLY
	}
	return unix.Mount(tag, dir, "virtiofs", flags, "")
}
