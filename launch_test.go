package cowork

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// hostd.log holds what hostd and the VM's helpers say about the guest and
// its network: it is its owner's alone, whatever the umask.
func TestLaunchedHostdLogIsOwnerOnly(t *testing.T) {
	p := newInstance(t)
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	exe := filepath.Join(t.TempDir(), "fake-cowork")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho started\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd, err := Launch(exe, "sandbox")
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p.HostdLog())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("hostd.log has mode %v, want 0600", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(p.HostdLog()); string(b) != "started\n" {
		t.Fatalf("hostd.log: %q", b)
	}
}
