package vz

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

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

// The VM's console files: a duplicate of hostd's pipe that outlives
// hostd's copy, and an input that never reads EOF; closing them ends the
// pipe for its reader.
func TestOwnConsole(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := ownConsole(w)
	if err != nil {
		t.Fatal(err)
	}
	w.Close() // hostd's copy, once Start returned
	if _, err := c.out.Write([]byte("console")); err != nil {
		t.Fatalf("write through the VM's copy: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "console" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	c.in.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.in.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the console's input: %v, want no data and no EOF", err)
	}
	for _, f := range []*os.File{c.in, c.out, c.idle} {
		if flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: flags %#x, %v: want close-on-exec", f.Name(), flags, err)
		}
	}
	c.Close()
	if _, err := r.Read(buf); !errors.Is(err, io.EOF) {
		t.Errorf("after Close the drain reads %v, want EOF", err)
	}
}
