//go:build e2e

package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A cloud-image stand-in (Debian with systemd and cloud-init, as qcow2)
// through the whole `cowork init --image` pipeline: convert, grow, cidata.
// Real cloud-init consumes the seed.
func TestCloudInitProvisionsTheGuest(t *testing.T) {
	cloud := os.Getenv("COWORK_E2E_CLOUD_DISK")
	if cloud == "" {
		t.Fatal("COWORK_E2E_CLOUD_DISK is not set; run through make e2e")
	}
	e := newEnv(t)
	args := e.initArgs("--image", cloud, "--disk", "3GiB", "--provision-packages", "tree", "--timeout", "25m")
	r := e.must(args...)
	for _, phase := range []string{"convert", "agent connected", "provisioning", "ready"} {
		if !strings.Contains(r.errOut, phase) {
			t.Errorf("init's progress lacks %q:\n%s", phase, r.errOut)
		}
	}
	os.Chmod(e.workspace, 0o777)
	root := func(script string) result { return e.run("exec", "-u", "root", script) }

	wantUID := os.Getuid()
	if wantUID == 0 {
		wantUID = 1000 // a root host user maps to the first ordinary uid
	}
	if r := root("id -u cowork"); strings.TrimSpace(r.out) != strconv.Itoa(wantUID) {
		t.Errorf("cowork's uid: %s", r)
	}
	if r := e.run("exec", "id -un; sudo -n true && echo sudo-ok"); r.out != "cowork\nsudo-ok\n" {
		t.Errorf("the default user and its sudo: %s", r)
	}
	if r := root("findmnt -n -o FSTYPE /workspace"); strings.TrimSpace(r.out) != "virtiofs" {
		t.Errorf("/workspace: %s", r)
	}
	if r := root("systemctl is-active cowork-agent; systemctl is-enabled cowork-agent"); r.out != "active\nenabled\n" {
		t.Errorf("the agent's unit: %s", r)
	}
	if r := root("command -v tree && test -f /var/lib/cowork/provisioned && echo provisioned"); !strings.Contains(r.out, "provisioned") {
		t.Errorf("provisioning: %s", r)
	}
	if r := root("df --output=size -B1M / | tail -1"); r.code == 0 {
		if mb, _ := strconv.Atoi(strings.TrimSpace(r.out)); mb < 2000 {
			t.Errorf("the root file system did not grow to the disk: %d MiB", mb)
		}
	}
	// apt went through the auditing proxy.
	lines := e.auditLines(t)
	if _, ok := find(lines, func(a auditLine) bool {
		return (a.Kind == "http" || a.Kind == "connect") && a.Verdict == "allow" && strings.Contains(a.Name, "debian")
	}); !ok {
		t.Errorf("no proxied apt traffic in the audit log")
	}

	// systemd brings the agent back after kill -9.
	root("systemctl kill -s KILL cowork-agent")
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := e.run("exec", "--no-shell", "-w", "/", "true")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not come back after kill -9: %s", r)
		}
		time.Sleep(time.Second)
	}
	if s := e.status(); s.State != "running" || !s.Ready {
		t.Errorf("status after the agent restarted: %+v", s)
	}
}
