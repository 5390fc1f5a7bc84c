package deletecmd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/creack/pty"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// newInstance makes a stopped instance in a fresh COWORK_HOME.
func newInstance(t *testing.T) (instance.Paths, *instance.Config) {
	t.Helper()
	p, cfg := instancetest.New(t, instance.Config{})
	os.WriteFile(p.Disk(), []byte("disk"), 0o600)
	return p, cfg
}

// onTerminal runs delete with stdin on a pseudo-terminal, as a person at a
// keyboard would, typing answer to its question.
func onTerminal(t *testing.T, answer string, args ...string) (string, error) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	ios := iostreams.FromFiles(tty, tty, tty)
	ios.In = strings.NewReader(answer) // what is typed; stdin stays a terminal
	var errOut bytes.Buffer
	ios.Out, ios.ErrOut = &bytes.Buffer{}, &errOut
	name := instance.DefaultName
	cmd := NewCmdDelete(ios, &name)
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err = cmd.ExecuteContext(context.Background())
	return errOut.String(), err
}

func TestDeleteAsksOnATerminal(t *testing.T) {
	p, cfg := newInstance(t)

	for _, no := range []string{"n\n", "\n", "whatever\n", ""} {
		out, err := onTerminal(t, no)
		var exit *cmdutil.ExitError
		if !errors.As(err, &exit) || exit.Code != 1 {
			t.Fatalf("answer %q: %v, want exit code 1", no, err)
		}
		if !strings.Contains(out, "Delete instance sandbox and its disk ("+p.Dir()+")? The workspace "+cfg.Workspace+" is kept. [y/N] ") ||
			!strings.Contains(out, "not deleted") {
			t.Fatalf("answer %q: stderr %q", no, out)
		}
		if _, err := os.Stat(p.Disk()); err != nil {
			t.Fatalf("answer %q removed the disk: %v", no, err)
		}
	}

	out, err := onTerminal(t, "y\n")
	if err != nil {
		t.Fatalf("answer y: %v\n%s", err, out)
	}
	if !strings.Contains(out, "deleted sandbox") {
		t.Errorf("answer y: stderr %q", out)
	}
	if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("answer y left the instance directory: %v", err)
	}
	if _, err := os.Stat(cfg.Workspace); err != nil {
		t.Errorf("delete removed the workspace: %v", err)
	}
}

func TestDeleteWithoutATerminal(t *testing.T) {
	p, _ := newInstance(t)
	ios, in, _, errOut := iostreams.Test()
	in.WriteString("y\n") // piped input is no answer
	name := instance.DefaultName
	cmd := NewCmdDelete(ios, &name)
	cmd.SetArgs(nil)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("got %v (exit %d), want a usage error naming --yes", err, cmdutil.ExitCode(err))
	}
	if _, err := os.Stat(p.Disk()); err != nil {
		t.Fatalf("the disk went without an answer: %v", err)
	}

	cmd = NewCmdDelete(ios, &name)
	cmd.SetArgs([]string{"--yes"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("--yes: %v\n%s", err, errOut)
	}
	if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--yes left the instance directory: %v", err)
	}
}
