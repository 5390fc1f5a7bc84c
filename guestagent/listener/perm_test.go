package listener

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/internal/agentwire"
)

// The device node the agent makes for its serial port is root's alone:
// anyone who could open it would speak for the host.
func TestCreatedDeviceNodeIsOwnerOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	sys, dev := t.TempDir(), t.TempDir()
	sysPort := filepath.Join(sys, "class/virtio-ports/vport2p1")
	os.MkdirAll(sysPort, 0o755)
	os.WriteFile(filepath.Join(sysPort, "name"), []byte(agentwire.SerialPort+"\n"), 0o644)
	os.WriteFile(filepath.Join(sysPort, "dev"), []byte("1:3\n"), 0o644)
	path, err := findPort(sys, dev, agentwire.SerialPort)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeCharDevice == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("device node mode %v, want a character device with 0600", st.Mode())
	}
}
