// Package sysproc is how hostd starts the helper processes it owns (QEMU,
// virtiofsd, test agents): on Linux they die with it (PR_SET_PDEATHSIG), so
// even a kill -9 of hostd leaves nothing running; other systems have no such
// guarantee and rely on hostd's own cleanup.
package sysproc

import "syscall"

// Attr is the SysProcAttr for a helper; group puts it in its own process
// group, so a signal to hostd's group does not reach it first.
func Attr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: group}
}
