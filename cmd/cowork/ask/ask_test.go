package ask

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func TestProjectNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"myapp": true, "my-app_2.0": true, "A": true, strings.Repeat("x", 64): true,
		"": false, ".": false, "..": false, strings.Repeat("x", 65): false, "a/b": false,
		"../x": false, "with space": false, "naïve": false, "x\n": false,
	} {
		if err := cowork.ValidateProject(name); (err == nil) != ok {
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
		askPerm    bool
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
		// --no-skip-permissions is cowork's: it never reaches claude.
		{args: []string{"--no-skip-permissions", "--model", "opus", "x"}, prompt: "x", claude: []string{"--model", "opus"}, askPerm: true},
		{args: []string{"x", "--no-skip-permissions"}, prompt: "x", askPerm: true},
	} {
		o, err := parse(t, tc.stdin, tc.args...)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.Project != tc.project || o.Prompt != tc.prompt || !slices.Equal(o.ClaudeArgs, tc.claude) || o.Raw != tc.raw || (o.Deprecated != "") != tc.deprecated || o.AskPermissions != tc.askPerm {
			t.Errorf("%q: project %q prompt %q claude %q raw %v deprecated %q ask permissions %v", tc.args, o.Project, o.Prompt, o.ClaudeArgs, o.Raw, o.Deprecated, o.AskPermissions)
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
	// --rm is cowork's, ask's alone: claude's conversation would go with
	// the clone.
	if o, err := parse(t, "", "--rm", "--model", "opus", "x"); err != nil || !o.Rm || o.Prompt != "x" || !slices.Equal(o.ClaudeArgs, []string{"--model", "opus"}) {
		t.Errorf("ask --rm: %+v, %v", o, err)
	}
	if _, err := ParseInteractive(mustTest(), "sandbox", []string{"--rm"}); !errors.As(err, &fe) || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "cowork ask --rm") {
		t.Errorf("claude --rm: %v", err)
	}
	o, _ := ParseInteractive(mustTest(), "sandbox", []string{"--project", "p", "-c", "--model", "opus", "look"})
	if o == nil || !slices.Equal(o.ClaudeArgs, []string{"-c", "--model", "opus", "--", "look"}) || o.Project != "p" {
		t.Errorf("claude: %+v", o)
	}
}

// The seed's -p PROJECT "PROMPT" is taken only in its own shape; every
// other -p is Claude Code's print, and the words after it the prompt.
func TestDeprecatedProject(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		piped   bool // the prompt comes on stdin
		project string
		rest    []string
	}{
		// The seed's README: a name, then one quoted prompt.
		{args: []string{"-p", "myproject", "create a web app"}, project: "myproject", rest: []string{"create a web app"}},
		{args: []string{"-p", "myproject", "-c", "add authentication"}, project: "myproject", rest: []string{"-c", "add authentication"}},
		{args: []string{"-c", "-p", "demo", "and again"}, project: "demo", rest: []string{"-c", "and again"}},
		{args: []string{"-p", "myapp", "--", "do it now"}, project: "myapp", rest: []string{"--", "do it now"}},
		{args: []string{"-p", "myapp"}, piped: true, project: "myapp", rest: []string{}},
		// Unquoted words: Claude Code's -p and a sentence.
		{args: []string{"-p", "fix", "the", "bug"}},
		{args: []string{"-p", "myapp", "do it", "now"}},
		// Two words: a one-word prompt is no prompt of the old form.
		{args: []string{"-p", "say", "hi"}},
		{args: []string{"-p", "myproject", "hello"}},
		// Not a project name, or nothing after it.
		{args: []string{"-p", "say hi"}},
		{args: []string{"-p", "../etc", "do it"}},
		{args: []string{"-p", "--model", "opus", "x y"}},
		{args: []string{"-p", "hello"}},
		{args: []string{"-p"}},
		// --project given: -p is print.
		{args: []string{"--project", "web", "-p", "myapp", "do it now"}},
		// After --, -p is the prompt's.
		{args: []string{"--", "-p", "myapp", "do it now"}},
	} {
		rest, project, warning := deprecatedProject(tc.args, !tc.piped)
		want := tc.rest
		if tc.project == "" {
			want = tc.args
		}
		if project != tc.project || !slices.Equal(rest, want) || (warning != "") != (tc.project != "") {
			t.Errorf("%q (piped %v): project %q, rest %q, warning %q; want project %q, rest %q", tc.args, tc.piped, project, rest, warning, tc.project, want)
		}
	}
	// Read as print, the words are the prompt, -p goes to claude.
	o, err := parse(t, "", "-p", "fix", "the", "bug")
	if err != nil || o.Project != "" || o.Prompt != "fix the bug" || !slices.Equal(o.ClaudeArgs, []string{"-p"}) {
		t.Errorf("-p fix the bug: %+v, %v", o, err)
	}
}

func mustTest() *iostreams.IOStreams {
	ios, _, _, _ := iostreams.Test()
	return ios
}

func TestResultCode(t *testing.T) {
	for _, c := range []struct {
		claude                     int
		failed, ended, interrupted bool
		want                       int
	}{
		{0, false, true, false, 0},
		{0, false, true, true, 0}, // interrupted, yet claude finished fine
		{0, true, true, false, 1}, // an error result behind exit 0
		{0, true, true, true, 130},
		{2, true, true, true, 2}, // claude's own failure code stands
		{137, false, true, true, 137},
		{0, false, false, true, 130},   // Ctrl-C before any result, and claude said nothing
		{0, false, false, false, 0},    // no result, no Ctrl-C: claude's word stands
		{137, false, false, true, 137}, // the second Ctrl-C's kill stands
	} {
		if got := resultCode(c.claude, c.failed, c.ended, c.interrupted); got != c.want {
			t.Errorf("resultCode(%d, failed %v, ended %v, interrupted %v) = %d, want %d", c.claude, c.failed, c.ended, c.interrupted, got, c.want)
		}
	}
}
