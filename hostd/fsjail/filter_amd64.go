//go:build linux

package fsjail

import "golang.org/x/sys/unix"

const (
	nativeArch = unix.AUDIT_ARCH_X86_64
	nativeX32  = true
)

// nativeRules adds amd64's older calls, which arm64 never had.
func nativeRules() []rule {
	rules := commonRules()
	rules = append(rules,
		rule{nr: unix.SYS_CHMOD, act: modeCheck, mode: 1, flags: -1},
		rule{nr: unix.SYS_CREAT, act: modeCheck, mode: 1, flags: -1},
		rule{nr: unix.SYS_OPEN, act: modeCheck, mode: 2, flags: 1},
		rule{nr: unix.SYS_MKNOD, act: modeCheck, mode: 1, flags: -1, device: true},
	)
	for _, nr := range []uint32{unix.SYS_CHOWN, unix.SYS_LCHOWN} {
		rules = append(rules, rule{nr: nr, act: pretend})
	}
	return rules
}
