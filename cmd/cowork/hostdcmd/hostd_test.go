package hostdcmd

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

func command(ios *iostreams.IOStreams, runF func(*Options) error, args ...string) *cobra.Command {
	name := "box"
	cmd := NewCmdHostd(ios, &name, runF)
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd
}

// hostd is no command a user runs: hidden, and it takes only the instance.
func TestHostdFlags(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := command(ios, func(o *Options) error { got = o; return nil })
	if !cmd.Hidden {
		t.Error("cowork hostd is listed in the help")
	}
	if err := cmd.Execute(); err != nil || got.Name != "box" || got.IO != ios {
		t.Fatalf("%+v %v", got, err)
	}
	for _, args := range [][]string{{"box"}, {"--foreground"}} {
		ran := false
		err := command(ios, func(*Options) error { ran = true; return nil }, args...).Execute()
		if ran || cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: ran %v, %v (exit %d), want a one-line usage error", args, ran, err, cmdutil.ExitCode(err))
		}
	}
}

// A second hostd for an instance exits with the code that tells `cowork
// start` one already runs, and touches nothing of the first.
func TestHostdForARunningInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	ios, _, _, _ := iostreams.Test()
	err := run(&Options{IO: ios, Name: instance.DefaultName})
	var exit *cmdutil.ExitError
	if !errors.As(err, &exit) || exit.Code != hostd.ExitAlreadyRunning || !strings.Contains(exit.Msg, "instance sandbox already has a hostd") {
		t.Fatalf("%v", err)
	}
	if !instance.Held(p) || len(h.Stops()) != 0 {
		t.Errorf("the running hostd was disturbed")
	}
}
