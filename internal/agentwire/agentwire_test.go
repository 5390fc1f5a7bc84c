package agentwire

import (
	"os"
	"strings"
	"testing"
)

// The e2e guest (hack/e2e-image.sh) is built by shell, which cannot import
// this package: its init starts the agent on the serial port by name and
// marks the guest provisioned by hand, in a marker it names to the agent
// (on a tmpfs, so that no earlier boot's marker says "ready" early). Were
// either to drift, hostd would dial a port no agent serves, or wait
// forever for provisioning, and every e2e test would time out far from
// the cause.
func TestTheE2EGuestUsesTheseFacts(t *testing.T) {
	b, err := os.ReadFile("../../hack/e2e-image.sh")
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	marker := ""
	if _, after, ok := strings.Cut(script, "--provisioned-marker "); ok {
		marker, _, _ = strings.Cut(after, " ")
	}
	if !strings.HasPrefix(marker, "/run/") {
		t.Fatalf("hack/e2e-image.sh names the agent no provisioned marker under /run: %q", marker)
	}
	for _, want := range []string{
		"--listen serial://" + SerialPort + " ",
		": >" + marker + "\n",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("hack/e2e-image.sh lacks %q: change it with agentwire", want)
		}
	}
}
