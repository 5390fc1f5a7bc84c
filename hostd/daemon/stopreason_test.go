package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExplainStopFindsAPanic(t *testing.T) {
	log := filepath.Join(t.TempDir(), "serial.log")
	stopped := errors.New("the VM stopped unexpectedly (qemu exited)")
	if err := explainStop(stopped, log); err != stopped {
		t.Errorf("no console: %v", err)
	}
	os.WriteFile(log, []byte("boot\nall fine\n"), 0o600)
	if err := explainStop(stopped, log); err != stopped {
		t.Errorf("a quiet console: %v", err)
	}
	os.WriteFile(log, []byte(strings.Repeat("x", 100<<10)+"\n[   42.1] Kernel panic - not syncing: sysrq triggered crash\r\n[   42.2] rebooting\n"), 0o600)
	err := explainStop(stopped, log)
	if !errors.Is(err, stopped) || !strings.Contains(err.Error(), "the guest kernel panicked (Kernel panic - not syncing: sysrq triggered crash)") {
		t.Errorf("a panic: %v", err)
	}
}
