//go:build !linux

package sysproc

import "syscall"

// Attr is the SysProcAttr for a helper; group puts it in its own process
// group. There is no parent-death signal outside Linux.
func Attr(group bool) *syscall.SysProcAttr { return Into(nil, group) }

// Into adds what Attr sets to attributes a helper already has; nil means
// none.
func Into(a *syscall.SysProcAttr, group bool) *syscall.SysProcAttr {
	if a == nil {
		a = &syscall.SysProcAttr{}
	}
	a.Setpgid = group
	return a
}
