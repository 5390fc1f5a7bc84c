package shell

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
)

// command is `cowork shell args...` on ios, reaching the agent through
// connect, with runF (nil: run it).
func command(ios *iostreams.IOStreams, connect func() (*agentclient.Client, error), runF func(*Options) error, args ...string) *cobra.Command {
	cmd := NewCmdShell(ios, connect, runF)
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd
}

func TestShellFlags(t *testing.T) {
	for _, c := range []struct {
		args          []string
		workdir, user string
	}{
		{nil, "/workspace", ""},
		{[]string{"-w", "/tmp", "-u", "root"}, "/tmp", "root"},
		{[]string{"--workdir=/srv", "--user", "cowork"}, "/srv", "cowork"},
	} {
		ios, _, _, _ := iostreams.Test()
		var got *Options
		err := command(ios, nil, func(o *Options) error { got = o; return nil }, c.args...).Execute()
		if err != nil || got.Workdir != c.workdir || got.User != c.user || got.IO != ios {
			t.Errorf("%q: %+v %v", c.args, got, err)
		}
	}
	for _, args := range [][]string{{"ls"}, {"-w"}, {"--login"}} {
		ios, _, _, _ := iostreams.Test()
		ran := false
		err := command(ios, nil, func(*Options) error { ran = true; return nil }, args...).Execute()
		if ran || cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: ran %v, %v (exit %d), want a one-line usage error", args, ran, err, cmdutil.ExitCode(err))
		}
	}
}

// Without a terminal the shell reads its commands from stdin, in the
// working directory asked for, and its exit code is the command's.
func TestShellReadsStdinWithoutATerminal(t *testing.T) {
	a := agenttest.Start(t)
	connect := func() (*agentclient.Client, error) { return agentclient.New(agentclient.UnixDialer(a.Socket)) }
	dir := t.TempDir()
	ios, in, out, _ := iostreams.Test()
	in.WriteString("echo from-stdin; pwd; exit 3\n")
	err := command(ios, connect, nil, "-w", dir).ExecuteContext(context.Background())
	if cmdutil.ExitCode(err) != 3 || !strings.Contains(out.String(), "from-stdin\n"+dir+"\n") {
		t.Fatalf("stdout %q, %v (exit %d)", out, err, cmdutil.ExitCode(err))
	}
}

// No agent to reach is the command's error, before any shell.
func TestShellWithoutAnAgent(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	err := command(ios, func() (*agentclient.Client, error) { return nil, cowork.NotRunningError("sandbox") }, nil).Execute()
	if cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "cowork start") {
		t.Errorf("%v", err)
	}
}
