package ask

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd"
)

func TestProjectNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"myapp": true, "my-app_2.0": true, "A": true, strings.Repeat("x", 64): true,
		"": false, ".": false, "..": false, strings.Repeat("x", 65): false, "a/b": false,
		"../x": false, "with space": false, "naïve": false, "x\n": false,
	} {
		if err := hostd.ValidateProject(name); (err == nil) != ok {
			t.Errorf("%q: %v", name, err)
		}
	}
}

func parse(t *testing.T, stdin string, args ...string) (*Options, error) {
	ios, in, _, _ := iostreams.Test()
	in.WriteString(stdin)
	return Parse(ios, "sandbox", args)
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		stdin      string
		project    string
		prompt     string
		claude     []string
		raw        bool
		deprecated bool
	}{
		{args: []string{"say hi"}, prompt: "say hi"},
		{args: []string{"--project", "web", "-c", "add auth"}, project: "web", prompt: "add auth", claude: []string{"-c"}},
		{args: []string{"--model", "opus", "--max-budget-usd", "1.0", "task"}, prompt: "task", claude: []string{"--model", "opus", "--max-budget-usd", "1.0"}},
		{args: []string{"--output-format", "json", "x"}, prompt: "x", claude: []string{"--output-format", "json"}, raw: true},
		{args: []string{"write", "hello", "world"}, prompt: "write hello world"},
		// The seed's -p PROJECT PROMPT...
		{args: []string{"-p", "myapp", "create a web app"}, project: "myapp", prompt: "create a web app", deprecated: true},
		{args: []string{"-p", "myapp", "-c", "add auth"}, project: "myapp", prompt: "add auth", claude: []string{"-c"}, deprecated: true},
		// ... is told from Claude Code's own -p (print).
		{args: []string{"-p", "say hi"}, prompt: "say hi", claude: []string{"-p"}},
		// With the prompt on stdin, "-p NAME" is the project.
		{args: []string{"-p", "myapp"}, stdin: "do x", project: "myapp", prompt: "do x", deprecated: true},
		// The prompt from stdin.
		{args: []string{"-"}, stdin: "from stdin\n", prompt: "from stdin"},
		{args: []string{"--model", "haiku"}, stdin: "piped", prompt: "piped", claude: []string{"--model", "haiku"}},
	} {
		o, err := parse(t, tc.stdin, tc.args...)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.Project != tc.project || o.Prompt != tc.prompt || !slices.Equal(o.ClaudeArgs, tc.claude) || o.Raw != tc.raw || (o.Deprecated != "") != tc.deprecated {
			t.Errorf("%q: project %q prompt %q claude %q raw %v deprecated %q", tc.args, o.Project, o.Prompt, o.ClaudeArgs, o.Raw, o.Deprecated)
		}
	}
	var fe *cmdutil.FlagError
	if _, err := parse(t, "", "--project", "a/b", "x"); !errors.As(err, &fe) {
		t.Errorf("a bad project: %v", err)
	}
	// A variadic option took the prompt: say so.
	if _, err := parse(t, "", "--allowedTools", "Bash", "check the flags"); !errors.As(err, &fe) || !strings.Contains(err.Error(), "--allowedTools takes every argument after it") {
		t.Errorf("a prompt after a variadic option: %v", err)
	}
	if o, err := parse(t, "", "--allowedTools", "Bash", "--", "check"); err != nil || o.Prompt != "check" {
		t.Errorf("-- ends a variadic option's list: %+v, %v", o, err)
	}
	if _, err := parse(t, "", "--help"); !errors.Is(err, ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	o, _ := ParseInteractive(mustTest(), "sandbox", []string{"--project", "p", "-c", "--model", "opus", "look"})
	if o == nil || !slices.Equal(o.ClaudeArgs, []string{"-c", "--model", "opus", "--", "look"}) || o.Project != "p" {
		t.Errorf("claude: %+v", o)
	}
}

func mustTest() *iostreams.IOStreams {
	ios, _, _, _ := iostreams.Test()
	return ios
}

func TestResultCode(t *testing.T) {
	for _, c := range []struct {
		claude              int
		failed, interrupted bool
		want                int
	}{
		{0, false, false, 0},
		{0, false, true, 0}, // interrupted, yet claude finished fine
		{0, true, false, 1}, // an error result behind exit 0
		{0, true, true, 130},
		{2, true, true, 2}, // claude's own failure code stands
		{137, false, true, 137},
	} {
		if got := resultCode(c.claude, c.failed, c.interrupted); got != c.want {
			t.Errorf("resultCode(%d, failed %v, interrupted %v) = %d, want %d", c.claude, c.failed, c.interrupted, got, c.want)
		}
	}
}
