//go:build !linux

package sysproc

import "syscall"

// Attr is the SysProcAttr for a helper; group puts it in its own process
// group. There is no parent-death signal outside Linux.
func Attr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: group}
}
