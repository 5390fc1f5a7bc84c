//go:build !linux

package fsjail

import (
	"errors"
	"syscall"
)

// sysProcAttr: the jail exists only on Linux, where hostd runs virtiofsd;
// on macOS, Virtualization.framework serves the share in hostd's process,
// as the user.
func sysProcAttr(Config) *syscall.SysProcAttr { return nil }

// Main fails: there is no jail here.
func Main([]string) error { return errors.New("the file server jail needs Linux") }
