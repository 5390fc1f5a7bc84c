package status

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// hostile is a status whose guest-made strings all carry the attack.
func hostile() *Status {
	a := termsafetest.Attack
	return &Status{
		Name: "sandbox", State: "stopped", Arch: "arm64", Workspace: "/w",
		AgentVersion: a, Error: "the guest kernel panicked (Kernel panic - not syncing: " + a + ")", Note: a,
		Backend: "qemu", Accelerator: a, Publish: []string{a},
	}
}

func TestPrintShowsGuestTextInert(t *testing.T) {
	ios, _, out, errOut := iostreams.Test()
	print(ios, hostile())
	termsafetest.Check(t, "status", strings.ReplaceAll(out.String(), "\n", ""), false)
	termsafetest.Check(t, "status's note", strings.TrimSuffix(errOut.String(), "\n"), false)
	if !strings.Contains(out.String(), "Kernel panic - not syncing: evil␛[2J") {
		t.Errorf("the stop reason is missing: %s", out)
	}
}

func TestPrintJSONKeepsTheValuesButPrintsSafely(t *testing.T) {
	ios, _, out, _ := iostreams.Test()
	st := hostile()
	if err := printJSON(ios, st); err != nil {
		t.Fatal(err)
	}
	termsafetest.Check(t, "status --json", strings.ReplaceAll(out.String(), "\n", ""), false)
	var back Status
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	// JSON keeps the value (invalid bytes were U+FFFD through encoding/json
	// already); only its printed form is escaped.
	var want string
	b, _ := json.Marshal(termsafetest.Attack)
	json.Unmarshal(b, &want)
	if back.AgentVersion != want {
		t.Errorf("the value changed: %q, want %q", back.AgentVersion, want)
	}
}
