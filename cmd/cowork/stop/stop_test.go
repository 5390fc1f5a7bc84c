package stop

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// parse runs `cowork stop args...` up to its Options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdStop(ios, &name, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	return got, cmd.Execute()
}

func TestStopFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		force   bool
		timeout time.Duration
	}{
		{nil, false, 30 * time.Second},
		{[]string{"-f"}, true, 30 * time.Second},
		{[]string{"--force", "--timeout", "2m"}, true, 2 * time.Minute},
	} {
		o, err := parse(t, c.args...)
		if err != nil || o.Name != "box" || o.Force != c.force || o.Timeout != c.timeout {
			t.Errorf("%q: %+v %v", c.args, o, err)
		}
	}
	for _, d := range []string{"0", "-1s"} {
		o, err := parse(t, "--timeout", d)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--force cuts the power at once") {
			t.Errorf("--timeout %s: %+v %v, want a usage error", d, o, err)
		}
	}
}

// stop runs `cowork stop args...` for real and returns its stderr.
func stop(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	name := instance.DefaultName
	cmd := NewCmdStop(ios, &name, nil)
	cmd.SetArgs(append([]string{}, args...))
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	if out.Len() != 0 {
		t.Errorf("stop wrote to stdout: %q", out)
	}
	return errOut.String(), err
}

// A running instance is asked to stop, as the flags say, and stop returns
// once its hostd is gone.
func TestStopARunningInstance(t *testing.T) {
	for _, c := range []struct {
		args    []string
		force   bool
		timeout time.Duration
	}{
		{nil, false, 30 * time.Second},
		{[]string{"--force", "--timeout", "2m"}, true, 2 * time.Minute},
	} {
		p, _ := instancetest.New(t, instance.Config{})
		h := instancetest.Running(t, p, true)
		errOut, err := stop(t, c.args...)
		if err != nil || !strings.Contains(errOut, "Stopping sandbox...\n") || !strings.Contains(errOut, "sandbox stopped (") {
			t.Fatalf("%q: %q %v", c.args, errOut, err)
		}
		if got := h.Stops(); len(got) != 1 || got[0].Force != c.force || got[0].TimeoutMS != c.timeout.Milliseconds() {
			t.Errorf("%q: hostd was asked %v", c.args, got)
		}
		if instance.Held(p) {
			t.Errorf("%q: returned while hostd still holds the instance", c.args)
		}
	}
}

// A stopped instance stays as it is; what a dead hostd left is cleaned up.
func TestStopAStoppedInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	if errOut, err := stop(t); err != nil || errOut != "sandbox is not running\n" {
		t.Errorf("%q %v", errOut, err)
	}
	dead := 1 << 22 // above any pid_max: no process has it
	os.WriteFile(p.PidFile(), []byte(strconv.Itoa(dead)), 0o600)
	errOut, err := stop(t)
	if err != nil || errOut != "cleaned up after hostd (pid "+strconv.Itoa(dead)+"), which had died\nsandbox is not running\n" {
		t.Errorf("%q %v", errOut, err)
	}
	if _, err := os.Stat(p.PidFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead hostd's pid file is still there: %v", err)
	}
}

func TestStopAMissingInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	if _, err := stop(t); cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "instance sandbox does not exist") {
		t.Errorf("%v", err)
	}
}

// stop --suspend is cowork suspend; it takes neither --force nor --timeout.
func TestStopSuspend(t *testing.T) {
	if o, err := parse(t, "--suspend"); err != nil || !o.Suspend {
		t.Fatalf("--suspend: %+v %v", o, err)
	}
	for _, args := range [][]string{{"--suspend", "--force"}, {"--suspend", "--timeout", "1m"}} {
		if o, err := parse(t, args...); o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--suspend") {
			t.Errorf("%q: %+v %v, want a usage error", args, o, err)
		}
	}
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	errOut, err := stop(t, "--suspend")
	if err != nil || !strings.Contains(errOut, "sandbox suspended") {
		t.Fatalf("%q %v", errOut, err)
	}
	if len(h.Suspends()) != 1 || len(h.Stops()) != 0 {
		t.Errorf("hostd was asked to suspend %v, to stop %v", h.Suspends(), h.Stops())
	}
}
