// Package sysproc is how hostd starts the helper processes it owns (QEMU,
// virtiofsd, test agents): on Linux they die with it (PR_SET_PDEATHSIG), so
// even a kill -9 of hostd leaves nothing running; other systems have no such
// guarantee and rely on hostd's own cleanup.
package sysproc

import "syscall"

// Attr is the SysProcAttr for a helper; group puts it in its own process
// group, so a signal to hostd's group does not reach it first.
func Attr(group bool) *syscall.SysProcAttr { return Into(nil, group) }

// Into adds what Attr sets to attributes a helper already has (a user
// namespace, say); nil means none.
func Into(a *syscall.SysProcAttr, group bool) *syscall.SysProcAttr {
	if a == nil {
		a = &syscall.SysProcAttr{}
	}
	a.Pdeathsig, a.Setpgid = syscall.SIGKILL, group
	return a
}
