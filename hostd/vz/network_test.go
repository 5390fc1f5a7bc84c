package vz

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The VM's copy must outlive the caller's file: hostd closes its own once
// Start returns.
func TestOwnNetworkOutlivesTheCallersFile(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	vmEnd := os.NewFile(uintptr(fds[0]), "vm")
	stackEnd := os.NewFile(uintptr(fds[1]), "stack")
	defer stackEnd.Close()

	own, err := ownNetwork(vmEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if err := vmEnd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := own.Write([]byte("frame")); err != nil {
		t.Fatalf("write through the copy after the original closed: %v", err)
	}
	buf := make([]byte, 16)
	n, err := stackEnd.Read(buf)
	if err != nil || string(buf[:n]) != "frame" {
		t.Fatalf("the stack read %q, %v; want the frame", buf[:n], err)
	}
	flags, err := unix.FcntlInt(own.Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("the copy's descriptor flags %#x, %v: want close-on-exec", flags, err)
	}
}

func TestOwnNetworkOfAClosedFile(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if own, err := ownNetwork(f); err == nil {
		own.Close()
		t.Fatal("a closed file was duplicated")
	}
}
