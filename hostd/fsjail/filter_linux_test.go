package fsjail

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// call is a seccomp_data as the filter reads it. x/net/bpf's machine loads
// words big-endian where the kernel loads them in the host's order; the
// filter only loads whole words, so writing each big-endian here gives the
// same answers.
func call(arch, nr uint32, args ...uint32) []byte {
	b := make([]byte, offArgs+8*6)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[argLow(i):], a)
	}
	return b
}

// TestFilterProgram runs the filter on calls the jail's process could
// make, including those the attack in jail_linux_test.go cannot: another
// ABI's, and a few edge cases of the mode checks.
func TestFilterProgram(t *testing.T) {
	vm, err := bpf.NewVM(program(nativeArch, nativeX32, nativeRules()))
	if err != nil {
		t.Fatal(err)
	}
	eperm, enosys := retErrno|uint32(unix.EPERM), retErrno|uint32(unix.ENOSYS)
	cases := []struct {
		name string
		in   []byte
		want uint32
	}{
		{"a 32-bit x86 call", call(unix.AUDIT_ARCH_I386, unix.SYS_SETRESUID), retKill},
		{"an ARM 32-bit call", call(unix.AUDIT_ARCH_ARM, unix.SYS_OPENAT), retKill},
		{"read", call(nativeArch, unix.SYS_READ), retAllow},
		{"setresuid", call(nativeArch, unix.SYS_SETRESUID, ^uint32(0), 0, ^uint32(0)), retErrno},
		{"setgroups", call(nativeArch, unix.SYS_SETGROUPS, 0, 0), retErrno},
		{"fchownat to root", call(nativeArch, unix.SYS_FCHOWNAT, 3, 0, 0, 0), retErrno},
		{"openat2", call(nativeArch, unix.SYS_OPENAT2), enosys},
		{"io_uring_setup", call(nativeArch, unix.SYS_IO_URING_SETUP), enosys},
		{"openat O_CREAT 0644", call(nativeArch, unix.SYS_OPENAT, 3, 0, unix.O_CREAT|unix.O_WRONLY, 0o644), retAllow},
		{"openat O_CREAT 04755", call(nativeArch, unix.SYS_OPENAT, 3, 0, unix.O_CREAT|unix.O_WRONLY, 0o4755), eperm},
		{"openat O_TMPFILE 02755", call(nativeArch, unix.SYS_OPENAT, 3, 0, unix.O_TMPFILE|unix.O_RDWR, 0o2755), eperm},
		{"openat without O_CREAT, garbage mode", call(nativeArch, unix.SYS_OPENAT, 3, 0, unix.O_RDONLY, 0o6777), retAllow},
		{"fchmod 0755", call(nativeArch, unix.SYS_FCHMOD, 3, 0o755), retAllow},
		{"fchmod 04755", call(nativeArch, unix.SYS_FCHMOD, 3, 0o4755), eperm},
		{"fchmodat 02755", call(nativeArch, unix.SYS_FCHMODAT, 3, 0, 0o2755), eperm},
		{"fchmodat2 06755", call(nativeArch, unix.SYS_FCHMODAT2, 3, 0, 0o6755, 0), eperm},
		{"fchmodat sticky", call(nativeArch, unix.SYS_FCHMODAT, 3, 0, 0o1777), retAllow},
		{"mknodat fifo", call(nativeArch, unix.SYS_MKNODAT, 3, 0, unix.S_IFIFO|0o644, 0), retAllow},
		{"mknodat char device", call(nativeArch, unix.SYS_MKNODAT, 3, 0, unix.S_IFCHR|0o600, 0x103), eperm},
		{"mknodat block device", call(nativeArch, unix.SYS_MKNODAT, 3, 0, unix.S_IFBLK|0o600, 0x800), eperm},
		{"mknodat setgid file", call(nativeArch, unix.SYS_MKNODAT, 3, 0, unix.S_IFREG|0o2644, 0), eperm},
	}
	if nativeX32 {
		cases = append(cases, struct {
			name string
			in   []byte
			want uint32
		}{"an x32 call", call(nativeArch, 0x40000000|unix.SYS_SETRESUID), retKill})
	}
	for _, c := range cases {
		got, err := vm.Run(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if uint32(got) != c.want {
			t.Errorf("%s: the filter answers %#x, want %#x", c.name, uint32(got), c.want)
		}
	}
}

// TestReadOnlyFilter: a read-only jail's file server mounts (virtiofsd's
// sandbox binds the share) but cannot remount or change a mount's flags;
// a read-write jail's filter leaves mounts to virtiofsd's own.
func TestReadOnlyFilter(t *testing.T) {
	eperm := retErrno | uint32(unix.EPERM)
	remountRW := call(nativeArch, unix.SYS_MOUNT, 0, 0, 0, unix.MS_REMOUNT|unix.MS_BIND)
	bind := call(nativeArch, unix.SYS_MOUNT, 0, 0, 0, unix.MS_BIND|unix.MS_REC)
	setattr := call(nativeArch, unix.SYS_MOUNT_SETATTR, 3, 0, unix.AT_RECURSIVE)
	for _, c := range []struct {
		readOnly bool
		name     string
		in       []byte
		want     uint32
	}{
		{true, "remount", remountRW, eperm},
		{true, "bind", bind, retAllow},
		{true, "mount_setattr", setattr, eperm},
		{true, "read", call(nativeArch, unix.SYS_READ), retAllow},
		{true, "setresuid", call(nativeArch, unix.SYS_SETRESUID, 0, 0, 0), retErrno},
		{false, "remount", remountRW, retAllow},
		{false, "mount_setattr", setattr, retAllow},
	} {
		rules := nativeRules()
		if c.readOnly {
			rules = append(rules, readOnlyRules()...)
		}
		vm, err := bpf.NewVM(program(nativeArch, nativeX32, rules))
		if err != nil {
			t.Fatal(err)
		}
		got, err := vm.Run(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if uint32(got) != c.want {
			t.Errorf("read-only %v, %s: the filter answers %#x, want %#x", c.readOnly, c.name, uint32(got), c.want)
		}
	}
}
