package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// The probe, run by sh against stand-ins for the guest's files.
func TestProvisionProbe(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	status := filepath.Join(dir, "status.json")
	step := filepath.Join(dir, "step")
	output := filepath.Join(dir, "cloud-init-output.log")
	probe := strings.NewReplacer(
		"/run/cloud-init/status.json", status,
		agentwire.ProvisionStepFile, step,
		"/var/log/cloud-init-output.log", output,
		"/var/lib/cloud/instance/boot-finished", filepath.Join(dir, "boot-finished"),
		// No journal here: the output log stands in.
		"journalctl", "false",
	).Replace(provisionProbe)
	run := func() provisionState {
		t.Helper()
		out, err := exec.Command(sh, "-c", probe).Output()
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		return parseProvisionProbe(string(out))
	}

	if got := run(); got != (provisionState{state: "running"}) || got.message() != "" {
		t.Errorf("nothing yet: %+v %q", got, got.message())
	}

	os.WriteFile(status, []byte("{\n \"v1\": {\n  \"datasource\": null,\n  \"init\": {\n   \"errors\": []\n  },\n  \"stage\": \"modules-config\"\n }\n}\n"), 0o644)
	os.WriteFile(output, []byte("Cloud-init v. 22.4 running 'modules:config'\nGenerating locales...\n"), 0o644)
	if got := run(); got.message() != "cloud-init modules-config: Generating locales..." {
		t.Errorf("cloud-init's stage: %+v %q", got, got.message())
	}

	os.WriteFile(step, []byte("installing packages\n"), 0o644)
	os.WriteFile(output, []byte("Get:1 http://deb.debian.org/debian bookworm/main tree\nUnpacking tree (2.1.0-1) ...\n"), 0o644)
	if got := run(); got.message() != "installing packages: Unpacking tree (2.1.0-1) ..." {
		t.Errorf("the script's step: %+v %q", got, got.message())
	}

	os.WriteFile(status, []byte("{\n \"v1\": {\n  \"stage\": null\n }\n}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "boot-finished"), nil, 0o644)
	if got := run(); got.state != "finished" || got.stage != "" {
		t.Errorf("finished: %+v", got)
	}
}

func TestProvisionMessage(t *testing.T) {
	for _, c := range []struct {
		p    provisionState
		want string
	}{
		{provisionState{line: "x"}, "x"},
		{provisionState{stage: "init"}, "cloud-init init"},
		{provisionState{step: "running npm install", stage: "modules-final", line: "added 3 packages"}, "running npm install: added 3 packages"},
		{parseProvisionProbe("running\n\n\n" + strings.Repeat("y", 300) + "\n"), strings.Repeat("y", 117) + "..."},
	} {
		if got := c.p.message(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.p, got, c.want)
		}
	}
}

// A guest that answers the provisioning probe with a flood costs hostd
// maxProbeOutput bytes, not the flood.
func TestProbeOutputIsBounded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the probe runs as root; the test agent needs root to run it")
	}
	a := agenttest.Start(t)
	d := &Daemon{agent: a.Client(t)}
	out, err := d.probe(t.Context(), "head -c 20000000 /dev/zero | tr '\\0' x; echo end")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != maxProbeOutput || strings.Trim(out, "x") != "" {
		t.Errorf("kept %d bytes of the probe's output, want the first %d", len(out), maxProbeOutput)
	}
	out, err = d.probe(t.Context(), "echo running; echo step")
	if err != nil || out != "running\nstep\n" {
		t.Errorf("a short answer: %q, %v", out, err)
	}
}
