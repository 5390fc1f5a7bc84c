package hostd

import (
	"errors"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

func TestExplainStopFindsAPanic(t *testing.T) {
	stopped := errors.New("QEMU exited on its own (qemu exited)")
	if err := explainStop(stopped, nil, "/i/serial.log"); err != stopped {
		t.Errorf("no console: %v", err)
	}
	if err := explainStop(stopped, []byte("boot\nall fine\n"), "/i/serial.log"); err != stopped {
		t.Errorf("a quiet console: %v", err)
	}
	tail := []byte(strings.Repeat("x", 100<<10) + "\n[   42.1] Kernel panic - not syncing: sysrq triggered crash\r\n[   42.2] rebooting\n")
	err := explainStop(stopped, tail, "/i/serial.log")
	if !errors.Is(err, stopped) || !strings.Contains(err.Error(), "the guest kernel panicked (Kernel panic - not syncing: sysrq triggered crash); its console is in /i/serial.log") {
		t.Errorf("a panic: %v", err)
	}
}

// A guest can print a fake panic line of its own, with escapes and no end:
// the stop reason quotes it inert and short.
func TestExplainStopQuotesTheGuestInert(t *testing.T) {
	stopped := errors.New("the guest powered off")
	tail := []byte("Kernel panic - not syncing: " + termsafetest.Attack + strings.Repeat("A", 50<<10))
	err := explainStop(stopped, tail, "/i/serial.log")
	termsafetest.Check(t, "the stop reason", err.Error(), false)
	if len(err.Error()) > maxReason+200 {
		t.Errorf("the stop reason is %d bytes long", len(err.Error()))
	}
	if !strings.Contains(err.Error(), "Kernel panic - not syncing: evil␛[2J") {
		t.Errorf("the fake panic is not quoted: %.200s", err)
	}
}
