package fsjail

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The filter is a table of rules, one per system call it judges; every
// other call is left to virtiofsd's own filter, which it installs on top.
// Seccomp runs the strictest answer of all filters, so virtiofsd cannot
// loosen this one, nor can anything it runs.

type action int

const (
	// pretend: the call does nothing and returns 0. For the identity
	// switches and chown: the file server stays the owner whatever the
	// guest asks to be.
	pretend action = iota
	// unsupported: ENOSYS, so that a caller falls back to a call this
	// filter can judge (openat2's mode hides behind a pointer), or does
	// without (io_uring would run file calls outside any filter).
	unsupported
	// modeCheck: EPERM when the mode argument carries setuid or setgid
	// (for the creating calls, only when they create), or names a
	// character or block device (mknod).
	modeCheck
	// refuse: EPERM, whatever the arguments.
	refuse
	// bitsDeny: EPERM when the argument at mode carries any of bits.
	bitsDeny
)

type rule struct {
	nr     uint32
	act    action
	mode   int  // index of the mode argument (modeCheck)
	flags  int  // index of open's flags argument, -1 when the call always creates or changes
	device bool // the mode also carries the file type (mknod)
	bits   uint32
}

// Bits the rules look for.
const (
	setIDBits   = unix.S_ISUID | unix.S_ISGID
	createFlags = unix.O_CREAT | unix.O_TMPFILE&^unix.O_DIRECTORY
	typeMask    = unix.S_IFMT
)

// Ret values. ERRNO carries the error number in its low bits; 0 makes the
// call return success without running it.
const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	retErrno = unix.SECCOMP_RET_ERRNO
)

// seccomp_data: nr at 0, arch at 4, the instruction pointer at 8, then
// six 64-bit arguments; the filter reads an argument's low 32 bits, which
// on these little-endian machines come first.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

func argLow(i int) uint32 { return uint32(offArgs + 8*i) }

// program builds the filter for this machine's rules.
func program(auditArch uint32, x32 bool, rules []rule) []bpf.Instruction {
	p := []bpf.Instruction{
		// A call made through another ABI (32-bit x86 on amd64) has other
		// numbers: none is legitimate here, so the process dies.
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
	}
	if x32 { // the x32 ABI: amd64's arch, numbers with bit 30 set
		p = append(p,
			bpf.LoadAbsolute{Off: offNr, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 0x40000000, SkipFalse: 1},
			bpf.RetConstant{Val: retKill},
		)
	}
	for _, r := range rules {
		body := r.body()
		p = append(p,
			bpf.LoadAbsolute{Off: offNr, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: r.nr, SkipFalse: uint8(len(body))},
		)
		p = append(p, body...)
	}
	return append(p, bpf.RetConstant{Val: retAllow})
}

// body is what runs once the call number matched; it always returns.
func (r rule) body() []bpf.Instruction {
	switch r.act {
	case pretend:
		return []bpf.Instruction{bpf.RetConstant{Val: retErrno}} // errno 0: success
	case unsupported:
		return []bpf.Instruction{bpf.RetConstant{Val: retErrno | uint32(unix.ENOSYS)}}
	case refuse:
		return []bpf.Instruction{bpf.RetConstant{Val: retErrno | uint32(unix.EPERM)}}
	case bitsDeny:
		return []bpf.Instruction{
			bpf.LoadAbsolute{Off: argLow(r.mode), Size: 4},
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: r.bits, SkipFalse: 1},
			bpf.RetConstant{Val: retErrno | uint32(unix.EPERM)},
			bpf.RetConstant{Val: retAllow},
		}
	}
	// The checks jump forward to the last two instructions: allow, deny.
	n := 2
	if r.flags >= 0 {
		n += 2
	}
	if r.device {
		n += 3
	}
	allow, deny := n, n+1
	var p []bpf.Instruction
	to := func(target int) uint8 { return uint8(target - len(p) - 1) } // from the jump being appended
	if r.flags >= 0 {
		p = append(p, bpf.LoadAbsolute{Off: argLow(r.flags), Size: 4})
		p = append(p, bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: createFlags, SkipFalse: to(allow)}) // opens, creates nothing
	}
	p = append(p, bpf.LoadAbsolute{Off: argLow(r.mode), Size: 4})
	p = append(p, bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: setIDBits, SkipTrue: to(deny)})
	if r.device {
		p = append(p, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: typeMask})
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.S_IFCHR, SkipTrue: to(deny)})
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.S_IFBLK, SkipTrue: to(deny)})
	}
	return append(p,
		bpf.RetConstant{Val: retAllow},
		bpf.RetConstant{Val: retErrno | uint32(unix.EPERM)},
	)
}

// Filter is the jail's seccomp program for this machine; a read-only
// jail's also keeps its file server from making the share writable again.
func Filter(readOnly bool) []unix.SockFilter {
	rules := nativeRules()
	if readOnly {
		rules = append(rules, readOnlyRules()...)
	}
	raw, err := bpf.Assemble(program(nativeArch, nativeX32, rules))
	if err != nil {
		panic("fsjail: the seccomp program does not assemble: " + err.Error())
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out
}

// commonRules are the calls both amd64 and arm64 have.
func commonRules() []rule {
	rules := []rule{
		{nr: unix.SYS_OPENAT2, act: unsupported},
		{nr: unix.SYS_IO_URING_SETUP, act: unsupported},
		{nr: unix.SYS_FCHMOD, act: modeCheck, mode: 1, flags: -1},
		{nr: unix.SYS_FCHMODAT, act: modeCheck, mode: 2, flags: -1},
		{nr: unix.SYS_FCHMODAT2, act: modeCheck, mode: 2, flags: -1},
		{nr: unix.SYS_OPENAT, act: modeCheck, mode: 3, flags: 2},
		{nr: unix.SYS_MKNODAT, act: modeCheck, mode: 2, flags: -1, device: true},
	}
	for _, nr := range []uint32{
		unix.SYS_SETUID, unix.SYS_SETGID, unix.SYS_SETREUID, unix.SYS_SETREGID,
		unix.SYS_SETRESUID, unix.SYS_SETRESGID, unix.SYS_SETFSUID, unix.SYS_SETFSGID,
		unix.SYS_SETGROUPS, unix.SYS_FCHOWN, unix.SYS_FCHOWNAT,
	} {
		rules = append(rules, rule{nr: nr, act: pretend})
	}
	return rules
}

// readOnlyRules narrow what a read-only share's file server may do to its
// mounts: it still mounts (virtiofsd builds its sandbox with bind mounts,
// which keep the share's read-only flag), but never remounts, and never
// changes a mount's flags through mount_setattr. A second line only: the
// read-only bind is the jail's own, which a server taken over could still
// unmount.
func readOnlyRules() []rule {
	return []rule{
		{nr: unix.SYS_MOUNT, act: bitsDeny, mode: 3, bits: unix.MS_REMOUNT},
		{nr: unix.SYS_MOUNT_SETATTR, act: refuse},
	}
}
