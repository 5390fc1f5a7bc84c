//go:build e2e

package e2e

import (
	"context"
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
	if r := root("systemctl is-active cowork-agent; systemctl is-enabled cowork-agent cowork-provision"); r.out != "active\nenabled\nenabled\n" {
		t.Errorf("the agent's and the provisioning's units: %s", r)
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

	// systemd brings the agent back after kill -9, and the unit's
	// ExecStartPre puts the host's agent back over a different one.
	sum := func() string {
		return strings.TrimSpace(root("sha256sum /usr/local/bin/cowork-agent | cut -d' ' -f1").out)
	}
	want := sum()
	root("cp /usr/local/bin/cowork-agent /tmp/a && echo x >>/tmp/a && mv /tmp/a /usr/local/bin/cowork-agent")
	if sum() == want {
		t.Fatal("could not change the installed agent")
	}
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
	if got := sum(); got != want {
		t.Errorf("the agent's unit did not reinstall the host's agent: sha256 %s, want %s", got, want)
	}
	checkGoldenClone(t, e, r.errOut, args)
}

// An init cut short during provisioning, and the guest's power with it,
// resumes when run again: cloud-init's per-instance modules would not run
// twice, the provisioning unit does, and init follows it to the end.
func TestInterruptedInitResumes(t *testing.T) {
	cloud := os.Getenv("COWORK_E2E_CLOUD_DISK")
	if cloud == "" {
		t.Fatal("COWORK_E2E_CLOUD_DISK is not set; run through make e2e")
	}
	e := newEnv(t)
	// Hangs the first time only: the boot is cut while it waits.
	once := "test -e /var/tmp/once || { touch /var/tmp/once; sync; sleep 3600; }"
	// --with docker: its step comes after the commands, so it runs once,
	// after the cut (image's TestDockerGoesThroughTheProxy runs it twice);
	// the guest is then checked as one made --with docker.
	args := e.initArgs("--image", cloud, "--disk", "3GiB", "--provision-packages=", "--no-golden", "--with", "docker",
		"--provision-cmd", once, "--provision-cmd", "touch /var/tmp/after", "--timeout", "20m")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var seen string
	for !strings.Contains(seen, "running test -e /var/tmp/once") {
		n, err := stderr.Read(buf)
		seen += string(buf[:n])
		if err != nil {
			t.Fatalf("init ended before its provisioning step showed: %q", seen)
		}
	}
	c.Process.Kill()
	c.Wait()
	e.must("stop", "--force") // the power cut

	r := e.must(args...)
	t.Logf("the resumed init:\n%s", r.errOut) // its phases, timed
	for _, want := range []string{"Resuming the interrupted init", "provisioning", "ready"} {
		if !strings.Contains(r.errOut, want) {
			t.Errorf("the resumed init's progress lacks %q:\n%s", want, r.errOut)
		}
	}
	if r := e.run("exec", "-u", "root", "test -f /var/tmp/after && test -f /var/lib/cowork/provisioned && echo done"); r.out != "done\n" {
		t.Errorf("provisioning did not finish: %s", r)
	}
	// A finished init is not run again.
	if r := e.run(args...); r.code == 0 || !strings.Contains(r.errOut, "already exists") {
		t.Errorf("init of a provisioned instance: %s", r)
	}
	t.Run("docker", func(t *testing.T) { checkDocker(t, e) })
}
