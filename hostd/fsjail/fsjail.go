// Package fsjail runs the workspace's file server (virtiofsd) so that a
// hostile guest gets nothing through the share that the workspace's owner
// could not do on the host anyway.
//
// virtiofsd creates each file as the uid and gid the guest names in its
// request, and the guest's root names any it likes: run as root on the
// host, a plain virtiofsd lets the guest make setuid-root programs, device
// nodes and files with capabilities in the host's workspace. Here the file
// server runs in its own user namespace whose only identity is the guest
// user's uid and gid mapped onto the workspace owner's, under a seccomp
// filter installed before it starts:
//
//   - every file it creates or changes belongs on the host to the
//     workspace owner: the calls that would switch to the guest's named
//     identity (setresuid and the rest) and chown do nothing and report
//     success, so whatever uid the guest names, the file is the owner's;
//   - setuid and setgid bits are refused (chmod and the creating calls
//     with either bit fail with EPERM), so are device nodes;
//   - capabilities in the namespace do not reach the host: no device
//     nodes, no security.* or trusted.* attributes, no file capabilities
//     (the server runs without CAP_SETFCAP and CAP_MKNOD);
//   - the guest's user sees the workspace as its own, because the owner
//     appears inside the namespace as that user (before, a workspace of
//     root's was not writable by the guest's user).
//
// The same works for a hostd that is not root: an unprivileged user may
// map its own uid into a namespace of its own, which is all this needs, so
// Debian 12's C virtiofsd (which wants root) runs for normal users too.
package fsjail

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// Arg is the first argument by which a re-executed cowork binary knows to
// act as the jail's shim (cowork's main checks for it before anything
// else): `cowork __cowork-fsjail NFDS RODIR PROGRAM ARGS...`, where
// PROGRAM inherits stdio and the NFDS descriptors from 3 on, and RODIR,
// when not empty, is made read-only first (Config.ReadOnly).
const Arg = "__cowork-fsjail"

// Config is who the file server acts as.
type Config struct {
	// UID and GID own, on the host, every file the guest makes: the
	// workspace owner's when hostd runs as root, else hostd's own.
	UID, GID int
	// GuestUID and GuestGID are who the owner is inside the guest: its
	// user, so that the workspace is that user's there.
	GuestUID, GuestGID int
	// ReadOnly serves Dir read-only: the shim, in a mount namespace of
	// the jail's own, binds Dir onto itself read-only (with every mount
	// under it) before the file server starts; whatever the guest asks of
	// the file server, the host's files there stay as they are. (The
	// filter also refuses remounts, but the bind is the jail's own: a file
	// server the guest took over could unmount it, and has the owner's
	// rights anyway, as with a writable share.)
	ReadOnly bool
	// Dir is the folder served, which ReadOnly needs.
	Dir string
}

// ForWorkspace is the Config for sharing dir with a guest whose user is
// guestUID:guestGID. As root, the folder's owner; otherwise this process's
// identity, the only one an unprivileged user may map.
func ForWorkspace(dir string, guestUID, guestGID int) (Config, error) {
	c := Config{UID: os.Getuid(), GID: os.Getgid(), GuestUID: guestUID, GuestGID: guestGID, Dir: dir}
	if c.UID == 0 {
		st, err := os.Stat(dir)
		if err != nil {
			return Config{}, err
		}
		sys := st.Sys().(*syscall.Stat_t)
		c.UID, c.GID = int(sys.Uid), int(sys.Gid)
	}
	if c.GuestUID < 0 || c.GuestGID < 0 {
		return Config{}, fmt.Errorf("guest identity %d:%d", c.GuestUID, c.GuestGID)
	}
	return c, nil
}

// Command returns the command that runs argv in the jail: this binary
// re-executed as the shim inside a new user namespace, where it installs
// the filter and becomes argv. extra are descriptors argv inherits (from
// 3 on); nothing else is passed on. The binary is handed over as an open
// file, so that the owner need not reach it by its path (root's build
// folder, say). The caller adds stdio and its own attributes, starts it,
// then closes every file in cmd.ExtraFiles.
func Command(c Config, argv []string, extra ...*os.File) (*exec.Cmd, error) {
	roDir := ""
	if c.ReadOnly {
		if c.Dir == "" || !filepath.IsAbs(c.Dir) {
			return nil, fmt.Errorf("a read-only jail needs the absolute path of its folder, not %q", c.Dir)
		}
		roDir = c.Dir
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	self, err := os.Open(exe)
	if err != nil {
		return nil, err
	}
	files := append(append([]*os.File{}, extra...), self)
	cmd := exec.Command(fmt.Sprintf("/proc/self/fd/%d", 2+len(files)), append([]string{Arg, strconv.Itoa(len(extra)), roDir}, argv...)...)
	cmd.Args[0] = exe
	cmd.ExtraFiles = files
	cmd.SysProcAttr = sysProcAttr(c)
	return cmd, nil
}
