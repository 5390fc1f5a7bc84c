//go:build linux

package fsjail

import "golang.org/x/sys/unix"

const (
	nativeArch = unix.AUDIT_ARCH_AARCH64
	nativeX32  = false
)

// nativeRules: arm64 has only the *at forms of the file calls.
func nativeRules() []rule { return commonRules() }
