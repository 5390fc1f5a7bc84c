package boot

import (
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

func TestBootProgressShowsGuestTextInert(t *testing.T) {
	ios, _, _, errOut := iostreams.Test()
	p := &printer{ios: ios, began: time.Now()}
	p.event(&cowork.Event{At: time.Now(), Phase: cowork.PhaseProvisioning,
		Message: "provisioning: " + termsafetest.Attack + "\n  [  9.9s] ready"})
	p.event(&cowork.Event{At: time.Now(), Phase: cowork.PhaseAgentConnected,
		Message: "agent connected", Error: "note: " + termsafetest.Attack + "\nsecond line"})
	out := errOut.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Errorf("want the progress line, the error and its second line; a guest newline made more: %q", out)
	}
	termsafetest.Check(t, "boot progress", out, true)
}

// The cause of a boot that ended is the error start returns, printed
// once: the progress line says only that it ended.
func TestBootProgressLeavesTheCauseToTheError(t *testing.T) {
	ios, _, _, errOut := iostreams.Test()
	p := &printer{ios: ios, began: time.Now()}
	p.event(&cowork.Event{At: time.Now(), Phase: cowork.PhaseFailed,
		Message: "boot failed", Error: "qemu-system-aarch64: failed to find romfile"})
	if out := errOut.String(); !strings.HasSuffix(out, "] boot failed\n") {
		t.Errorf("the progress line of a failed boot: %q", out)
	}
}
