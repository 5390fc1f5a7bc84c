package exec

import (
	"errors"
	"fmt"
	osexec "os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmdExec(ios, &cmdutil.AgentTarget{}, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(ios.ErrOut)
	cmd.SetErr(ios.ErrOut)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	err := cmd.Execute()
	return got, err
}

func TestFlags(t *testing.T) {
	t.Setenv("FROM_HOST", "yes")
	tests := []struct {
		args []string
		want Options
	}{
		{[]string{"python3 --version"}, Options{Command: []string{"python3 --version"}, Workdir: "/workspace"}},
		{[]string{"ls", "-la", "/tmp"}, Options{Command: []string{"ls", "-la", "/tmp"}, Workdir: "/workspace"}},
		{[]string{"-w", "/tmp", "-u", "root", "-e", "A=1", "-e", "FROM_HOST", "-e", "UNSET_HERE", "--", "make", "-j2"},
			Options{Command: []string{"make", "-j2"}, Workdir: "/tmp", User: "root", Env: []string{"A=1", "FROM_HOST=yes"}}},
		{[]string{"--no-shell", "env", "-i", "--workdir", "x"}, Options{Command: []string{"env", "-i", "--workdir", "x"}, Workdir: "/workspace", NoShell: true}},
		{[]string{"--rm", "--snapshot", "clean", "true", "--rm"}, Options{Command: []string{"true", "--rm"}, Workdir: "/workspace", Rm: true, Snapshot: "clean"}},
		{[]string{"-v", "curl", "-v", "x"}, Options{Command: []string{"curl", "-v", "x"}, Workdir: "/workspace", Verbose: true}},
	}
	for _, tt := range tests {
		got, err := parse(t, tt.args...)
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if !slices.Equal(got.Command, tt.want.Command) || got.Workdir != tt.want.Workdir || got.User != tt.want.User ||
			!slices.Equal(got.Env, tt.want.Env) || got.NoShell != tt.want.NoShell || got.TTY != tt.want.TTY ||
			got.Rm != tt.want.Rm || got.Snapshot != tt.want.Snapshot {
			t.Errorf("%q: got %+v, want %+v", tt.args, *got, tt.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},                          // no command
		{"-e", "=x", "true"},        // no key
		{"-e", "A B=x", "true"},     // space in key
		{"--tty", "true"},           // stdin is not a terminal
		{"--no-such-flag", "true"},  // unknown flag
		{"-w"},                      // flag without its value
		{"--snapshot", "s", "true"}, // --snapshot without --rm
	} {
		_, err := parse(t, args...)
		var fe *cmdutil.FlagError
		if !errors.As(err, &fe) {
			t.Errorf("%q: got %v, want a usage error", args, err)
		} else if cmdutil.ExitCode(err) != 2 {
			t.Errorf("%q: exit code %d, want 2", args, cmdutil.ExitCode(err))
		}
	}
}

// --rm clones an instance: with an agent named directly there is none.
func TestRmWithAnAgentIsAUsageError(t *testing.T) {
	t.Setenv(cmdutil.AgentEnv, "unix:///tmp/agent.sock")
	_, err := parse(t, "--rm", "true")
	if cmdutil.ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), "drop one") {
		t.Errorf("--rm with $%s: %v", cmdutil.AgentEnv, err)
	}
	if _, err := parse(t, "true"); err != nil {
		t.Errorf("without --rm: %v", err)
	}
}

// The words of a multi-word command line must reach the program as they
// were typed, through the guest's shell.
func TestArgvKeepsWordsThroughTheShell(t *testing.T) {
	words := []string{"printf", "%s|", "a b", "it's", "$HOME", "", "*", "x\ny", `back\slash`, "--flag=v"}
	argv := Argv(words, false)
	if argv[0] != "bash" || argv[1] != "-lc" {
		t.Fatalf("argv %q does not go through bash -lc", argv)
	}
	out, err := osexec.Command("bash", "-c", argv[2]).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(words[2:], "|") + "|"
	if string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
	if got := Argv([]string{"echo $HOME"}, false); got[2] != "echo $HOME" {
		t.Fatalf("a single argument must stay a script: %q", got)
	}
	if got := Argv([]string{"a b", "c"}, true); !slices.Equal(got, []string{"a b", "c"}) {
		t.Fatalf("--no-shell must pass argv as is: %q", got)
	}
}
