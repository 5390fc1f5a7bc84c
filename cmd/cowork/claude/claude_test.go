package claude

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/ask"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// parse runs `cowork claude args...` up to its Options.
func parse(t *testing.T, args ...string) (*ask.Options, string, error) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	var got *ask.Options
	name := "sandbox"
	cmd := NewCmdClaude(ios, &name, func(o *ask.Options) error { got = o; return nil })
	cmd.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	err := cmd.Execute()
	return got, out.String(), err
}

func TestProjectAndSessionFlagsReachTheClient(t *testing.T) {
	getenv := func(k string) string {
		return map[string]string{"ANTHROPIC_MODEL": "claude-x", "ANTHROPIC_API_KEY": "sk-real"}[k]
	}
	for _, tc := range []struct {
		args    []string
		project string
		claude  []string
		askPerm bool
		inst    string
	}{
		{args: nil, claude: nil, inst: "sandbox"},
		{args: []string{"--project", "myapp", "-c"}, project: "myapp", claude: []string{"-c"}, inst: "sandbox"},
		{args: []string{"-c", "--project=myapp"}, project: "myapp", claude: []string{"-c"}, inst: "sandbox"},
		{args: []string{"--continue"}, claude: []string{"--continue"}, inst: "sandbox"},
		{args: []string{"-r", "0b4c5f5e-1111-2222-3333-444455556666", "--project", "web"}, project: "web",
			claude: []string{"-r", "0b4c5f5e-1111-2222-3333-444455556666"}, inst: "sandbox"},
		{args: []string{"--resume", "abc", "--model", "opus", "look at the test"},
			claude: []string{"--resume", "abc", "--model", "opus", "--", "look at the test"}, inst: "sandbox"},
		{args: []string{"--no-skip-permissions", "--instance", "dev", "-n", "my session"},
			claude: []string{"-n", "my session"}, askPerm: true, inst: "dev"},
	} {
		o, _, err := parse(t, tc.args...)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.Instance != tc.inst {
			t.Errorf("%q: instance %q, want %q", tc.args, o.Instance, tc.inst)
		}
		eo := &agentclient.ExecOptions{Env: []string{"TERM=xterm-256color"}}
		co := clientOptions(o, cowork.Credential{APIKey: "sk-real"}, eo, getenv)
		if co.Project != tc.project || !slices.Equal(co.Args, tc.claude) || co.AskPermissions != tc.askPerm {
			t.Errorf("%q: client gets project %q, args %q, ask permissions %v; want %q, %q, %v",
				tc.args, co.Project, co.Args, co.AskPermissions, tc.project, tc.claude, tc.askPerm)
		}
		// The credential goes to the relay, never into claude's environment.
		if !slices.Equal(co.Env, []string{"ANTHROPIC_MODEL=claude-x", "TERM=xterm-256color"}) || co.Credential.APIKey != "sk-real" {
			t.Errorf("%q: env %q, credential %+v", tc.args, co.Env, co.Credential)
		}
	}
}

func TestBadProjectIsAUsageError(t *testing.T) {
	for _, p := range []string{"..", "a/b", "../etc", "with space", strings.Repeat("x", 65)} {
		o, _, err := parse(t, "--project", p, "-c")
		var fe *cmdutil.FlagError
		if o != nil || !errors.As(err, &fe) || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "project") {
			t.Errorf("--project %q: options %+v, error %v (exit %d), want a usage error", p, o, err, cmdutil.ExitCode(err))
		}
	}
	if _, _, err := parse(t, "--frobnicate"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("an unknown flag: %v", err)
	}
}

func TestHelpListsClaudeCodeFlags(t *testing.T) {
	o, out, err := parse(t, "--help")
	if err != nil || o != nil || !strings.Contains(out, "Claude Code flags") || !strings.Contains(out, "--no-skip-permissions") {
		t.Errorf("--help: %v, %+v\n%s", err, o, out)
	}
}
