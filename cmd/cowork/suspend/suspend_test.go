package suspend

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// run runs `cowork suspend args...` and returns stdout and stderr.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	name := instance.DefaultName
	cmd := NewCmdSuspend(ios, &name, nil)
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestSuspendFlags(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdSuspend(ios, &name, func(o *Options) error { got = o; return nil })
	cmd.SetArgs([]string{"-f", "--json"})
	if err := cmd.Execute(); err != nil || got.Name != "box" || !got.Force || !got.JSON {
		t.Fatalf("%+v %v", got, err)
	}
	cmd = NewCmdSuspend(ios, &name, func(o *Options) error { return nil })
	cmd.SetArgs([]string{"now"})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	if err := cmd.Execute(); cmdutil.ExitCode(err) != 2 {
		t.Errorf("an argument: %v, want a usage error", err)
	}
}

// A running instance is asked to suspend, as the flags say; the command
// returns once its hostd is gone, the result on stdout with --json.
func TestSuspendARunningInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	out, errOut, err := run(t, "--force", "--json")
	if err != nil || !strings.Contains(errOut, "Suspending sandbox...\n") || !strings.Contains(errOut, "sandbox suspended: 300 MiB saved") {
		t.Fatalf("%q %v", errOut, err)
	}
	var r Result
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Name != "sandbox" || r.Bytes != 300<<20 || r.TookMS != 1500 {
		t.Errorf("--json: %q %+v %v", out, r, err)
	}
	if got := h.Suspends(); len(got) != 1 || !got[0].Force {
		t.Errorf("hostd was asked %v", got)
	}
	if instance.Held(p) {
		t.Error("returned while hostd still holds the instance")
	}
}

// A refused suspend says hostd's why, and the instance runs on.
func TestSuspendRefused(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	h.RefuseSuspend(controlwire.Errorf(controlwire.CodeFailedPrecondition, "cannot suspend: 1 guest process uses /workspace (bash 812)"))
	out, _, err := run(t)
	if cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "bash 812") || out != "" {
		t.Errorf("%q %v", out, err)
	}
	if !instance.Held(p) {
		t.Error("a refused suspend stopped the instance")
	}
}

func TestSuspendAStoppedInstance(t *testing.T) {
	instancetest.New(t, instance.Config{})
	if _, _, err := run(t); cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "not running") || !strings.Contains(err.Error(), "cowork start") {
		t.Errorf("%v", err)
	}
}
