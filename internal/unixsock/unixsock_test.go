package unixsock

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// hostd.sock and agent.sock give whoever can connect the VM (agent.sock
// runs any command in the guest as any user), virtiofs.sock the workspace:
// only their owner may, whatever the umask.
func TestListenOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir, err := os.MkdirTemp("", "lu") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "hostd.sock")
	os.WriteFile(path, []byte("left by a crash"), 0o666)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", st.Mode())
	}
	if got := syscall.Umask(0); got != 0 {
		t.Errorf("Listen left the umask at %#o", got)
	}
}
