package start

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/savestate"
)

// parse runs `cowork start args...` up to its Options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdStart(ios, &name, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	return got, cmd.Execute()
}

func TestStartFlags(t *testing.T) {
	o, err := parse(t)
	if err != nil || o.Name != "box" || o.Timeout != 10*time.Minute {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	if o, err := parse(t, "--timeout", "20m"); err != nil || o.Timeout != 20*time.Minute {
		t.Fatalf("--timeout 20m: %+v %v", o, err)
	}
}

// A timeout of nothing would give up on the boot at once, and stop the VM
// it had just started: it is a usage error, said in one line.
func TestStartRefusesATimeoutOfNothing(t *testing.T) {
	for _, d := range []string{"0", "0s", "-5m"} {
		o, err := parse(t, "--timeout", d)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.HasPrefix(err.Error(), "--timeout ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--timeout %s: %+v %v (exit %d), want a one-line usage error", d, o, err, cmdutil.ExitCode(err))
		}
	}
}

// start runs `cowork start args...` for real and returns its stderr.
func start(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	name := instance.DefaultName
	cmd := NewCmdStart(ios, &name, nil)
	cmd.SetArgs(append([]string{}, args...))
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	if out.Len() != 0 {
		t.Errorf("start wrote to stdout: %q", out)
	}
	return errOut.String(), err
}

// A running, ready instance is left as it is.
func TestStartLeavesARunningInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	errOut, err := start(t)
	if err != nil || errOut != "Starting sandbox...\nsandbox is already running\n" {
		t.Fatalf("%q %v", errOut, err)
	}
	if len(h.Stops()) != 0 || !instance.Held(p) {
		t.Errorf("start disturbed the running instance: %v", h.Stops())
	}
}

func TestStartAMissingInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	if _, err := start(t); cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "instance sandbox does not exist") {
		t.Errorf("%v", err)
	}
}

// --cold discards a stopped instance's saved guest before the boot, and
// leaves a running instance, and its folder, as they are.
func TestStartColdDiscardsTheSavedState(t *testing.T) {
	if o, err := parse(t, "--cold"); err != nil || !o.Cold {
		t.Fatalf("--cold: %+v %v", o, err)
	}
	p, _ := instancetest.New(t, instance.Config{})
	if err := os.MkdirAll(p.Suspend(), 0o700); err != nil {
		t.Fatal(err)
	}
	h := instancetest.Running(t, p, true)
	errOut, err := start(t, "--cold")
	if err != nil || strings.Contains(errOut, "discarded") {
		t.Errorf("start --cold of a running instance: %q %v", errOut, err)
	}
	if _, err := os.Stat(p.Suspend()); err != nil {
		t.Errorf("start --cold of a running instance touched its folder: %v", err)
	}
	h.Stop()
	// Stopped: the state goes, then the start runs (and fails here: no
	// hostd binary to launch, which is not what this test is about).
	errOut, _ = start(t, "--cold")
	if !strings.Contains(errOut, "discarded the saved state of sandbox") {
		t.Errorf("start --cold: %q", errOut)
	}
	if _, err := os.Stat(p.Suspend()); !os.IsNotExist(err) {
		t.Errorf("the saved state is still there: %v", err)
	}
}

// --mount replaces the mounts of a stopped instance and keeps them;
// --no-mounts drops them; a bad mount is a usage error that changes
// nothing; a running instance and a suspended one (without --cold) are
// refused, the suspended one's saved guest kept.
func TestStartMounts(t *testing.T) {
	if _, err := parse(t, "--mount", "/a", "--no-mounts"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("--mount with --no-mounts: %v", err)
	}
	if _, err := parse(t, "--mount", "/a:b:c:d"); cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "HOST[:GUEST][:ro]") {
		t.Errorf("a mount of four parts: %v", err)
	}
	p, _ := instancetest.New(t, instance.Config{})
	data := t.TempDir()
	load := func() []instance.Mount {
		c, err := instance.Load(instance.DefaultName)
		if err != nil {
			t.Fatal(err)
		}
		return c.Mounts
	}

	for _, bad := range [][]string{
		{"--mount", data + ":/etc/data"},
		{"--mount", data + "/missing:/data"},
		{"--mount", data + ":/data", "--mount", data + "/sub:/sub"},
		{"--mount", os.Getenv("COWORK_HOME") + ":/cowork"},
	} {
		if _, err := start(t, bad...); cmdutil.ExitCode(err) != 2 || len(load()) != 0 {
			t.Errorf("start %q: %v (exit %d), mounts now %v; want a usage error and nothing changed", bad, err, cmdutil.ExitCode(err), load())
		}
	}

	h := instancetest.Running(t, p, true)
	if _, err := start(t, "--mount", data+":/data:ro"); err == nil || !strings.Contains(err.Error(), "is running") || len(load()) != 0 {
		t.Errorf("--mount on a running instance: %v; mounts %v", err, load())
	}
	h.Stop()
	// The start itself fails here (no hostd binary); the mounts are set first.
	errOut, _ := start(t, "--mount", data+":/data:ro")
	if got := load(); len(got) != 1 || got[0] != (instance.Mount{Host: data, Guest: "/data", ReadOnly: true}) || !strings.Contains(errOut, "mounts "+data+" at /data (ro)") {
		t.Errorf("--mount on a stopped instance: mounts %+v, stderr %q", got, errOut)
	}

	if err := os.MkdirAll(p.Suspend(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := savestate.Write(p.Suspend(), &savestate.Manifest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := start(t, "--no-mounts"); err == nil || !strings.Contains(err.Error(), "suspended") || len(load()) != 1 {
		t.Errorf("--no-mounts on a suspended instance: %v; mounts %v", err, load())
	}
	if _, err := start(t, "--cold", "--mount", data+":/usr/data"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("--cold with a bad mount: %v", err)
	}
	if _, err := os.Stat(p.Suspend()); err != nil {
		t.Errorf("a refused --mount discarded the saved guest: %v", err)
	}
	errOut, _ = start(t, "--cold", "--no-mounts")
	if len(load()) != 0 || !strings.Contains(errOut, "discarded the saved state") {
		t.Errorf("--cold --no-mounts: mounts %v, stderr %q", load(), errOut)
	}
}

// --ssh-agent and --no-ssh-agent set the instance's lending for later
// starts; a suspended guest that holds the socket is not told to stop
// unless --cold discards it; a running instance is refused.
func TestStartSSHAgent(t *testing.T) {
	if _, err := parse(t, "--ssh-agent", "--no-ssh-agent"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("both: %v", err)
	}
	p, _ := instancetest.New(t, instance.Config{})
	lends := func() bool {
		c, err := instance.Load(instance.DefaultName)
		if err != nil {
			t.Fatal(err)
		}
		return c.SSHAgent
	}
	h := instancetest.Running(t, p, true)
	if _, err := start(t, "--ssh-agent"); err == nil || !strings.Contains(err.Error(), "is running") || lends() {
		t.Errorf("--ssh-agent on a running instance: %v", err)
	}
	h.Stop()
	start(t, "--ssh-agent") // the boot fails here (no hostd); the setting is kept first
	if !lends() {
		t.Fatal("--ssh-agent was not kept")
	}
	os.MkdirAll(p.Suspend(), 0o700)
	if err := savestate.Write(p.Suspend(), &savestate.Manifest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := start(t, "--no-ssh-agent"); err == nil || !strings.Contains(err.Error(), "--cold") || !lends() {
		t.Errorf("--no-ssh-agent on a suspended instance: %v", err)
	}
	if _, err := os.Stat(p.Suspend()); err != nil {
		t.Fatalf("the refusal discarded the saved state: %v", err)
	}
	errOut, _ := start(t, "--cold", "--no-ssh-agent")
	if lends() || !strings.Contains(errOut, "discarded the saved state") {
		t.Errorf("--cold --no-ssh-agent: lends %v, stderr %q", lends(), errOut)
	}
}
