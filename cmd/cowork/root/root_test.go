package root

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

type result struct {
	code        int
	out, errOut string
}

func cowork(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ios, in, out, errOut := iostreams.Test()
	in.WriteString(stdin)
	code := Main(context.Background(), ios, args)
	return result{code, out.String(), errOut.String()}
}

func TestExecThroughTheCLI(t *testing.T) {
	a := agenttest.Start(t)
	dir := t.TempDir()
	r := cowork(t, "input\n", "--agent", a.Addr, "exec", "-w", dir, "cat; echo err >&2; pwd; exit 4")
	if r.code != 4 || r.out != "input\n"+dir+"\n" || r.errOut != "err\n" {
		t.Fatalf("got %+v", r)
	}
	// $COWORK_AGENT works like --agent.
	t.Setenv("COWORK_AGENT", a.Addr)
	if r := cowork(t, "", "exec", "-w", dir, "-e", "X=1", "--", "echo", "$X"); r.code != 0 || r.out != "$X\n" {
		t.Fatalf("quoted words: %+v", r)
	}
	if r := cowork(t, "", "exec", "-w", dir, "echo", "hi", "-e"); r.code != 0 || r.out != "hi -e\n" {
		t.Fatalf("flags after the command belong to it: %+v", r)
	}
}

func TestExecErrors(t *testing.T) {
	a := agenttest.Start(t)
	t.Setenv("COWORK_AGENT", a.Addr)
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"exec", "--no-shell", "-w", "/", "no-such-program"}, 127, `executable "no-such-program" not found`},
		{[]string{"exec", "-w", "/no/such/dir", "true"}, 1, "working directory /no/such/dir does not exist in the guest; choose another with --workdir"},
		{[]string{"exec", "-u", "no-such-user", "-w", "/", "true"}, 1, `unknown user "no-such-user"`},
		{[]string{"exec"}, 2, "needs a COMMAND"},
		{[]string{"--agent", "tcp://1.2.3.4:5", "exec", "true"}, 2, "want unix:///path"},
	}
	for _, tt := range tests {
		r := cowork(t, "", tt.args...)
		if r.code != tt.code || !strings.Contains(r.errOut, tt.msg) || strings.Count(strings.TrimSpace(r.errOut), "\n") > 1 {
			t.Errorf("%q: got code %d, stderr %q; want %d and %q", tt.args, r.code, r.errOut, tt.code, tt.msg)
		}
	}
}

func TestNoAgentSaysHowToStart(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	t.Setenv("COWORK_AGENT", "")
	r := cowork(t, "", "exec", "true")
	if r.code != 1 || !strings.Contains(r.errOut, "instance sandbox does not exist") || !strings.Contains(r.errOut, "cowork init") {
		t.Fatalf("got %+v", r)
	}
	r = cowork(t, "", "--name", "Bad Name!", "exec", "true")
	if r.code == 0 || !strings.Contains(r.errOut, `instance name "Bad Name!"`) {
		t.Fatalf("bad --name: %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	if r := cowork(t, "", "frobnicate"); r.code != 2 || !strings.Contains(r.errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %+v", r)
	}
	if r := cowork(t, "", "--frob"); r.code != 2 {
		t.Errorf("unknown flag: %+v", r)
	}
	// ask: usage errors, and a help that lists every Claude Code flag.
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"ask"}, "read an empty prompt"},
		{[]string{"ask", "--project", "../etc", "hi"}, `project "../etc"`},
		{[]string{"ask", "--project", "..", "hi"}, `project ".."`},
		{[]string{"ask", "--frobnicate", "hi"}, "unknown flag --frobnicate"},
		{[]string{"ask", "--model"}, "--model needs a value"},
	} {
		if r := cowork(t, "", tc.args...); r.code != 2 || !strings.Contains(r.errOut, tc.msg) {
			t.Errorf("%q: %+v", tc.args, r)
		}
	}
	r := cowork(t, "", "ask", "--help")
	if r.code != 0 || !strings.Contains(r.out, "Claude Code flags") {
		t.Fatalf("ask --help: %+v", r)
	}
	for _, f := range claudecode.Flags {
		if f.Long != "--help" && !strings.Contains(r.out, f.Usage()) {
			t.Errorf("ask --help lacks %s", f.Usage())
		}
	}
}

func TestVersionAndCompletion(t *testing.T) {
	r := cowork(t, "", "version", "--json")
	var v struct{ Version, Commit, Go string }
	if r.code != 0 || json.Unmarshal([]byte(r.out), &v) != nil || v.Version == "" || !strings.HasPrefix(v.Go, "go") {
		t.Fatalf("version --json: %+v", r)
	}
	if r := cowork(t, "", "version"); !strings.HasPrefix(r.out, "cowork "+v.Version+"\n") || !strings.Contains(r.out, "go:") {
		t.Fatalf("version: %+v", r)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := cowork(t, "", "completion", sh); r.code != 0 || !strings.Contains(r.out, "cowork") {
			t.Errorf("completion %s: code %d", sh, r.code)
		}
	}
}

// -n/--name before the subcommand is cowork's instance; after ask or
// claude it is Claude Code's session name, forwarded.
func TestGlobalNameBeforeAskChoosesTheInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	t.Setenv("COWORK_AGENT", "")
	t.Setenv("ANTHROPIC_API_KEY", "sk-test")
	for _, tc := range []struct {
		args     []string
		instance string
	}{
		{[]string{"--name", "dev", "ask", "hi"}, "dev"},
		{[]string{"-n", "dev", "ask", "hi"}, "dev"},
		{[]string{"--name=dev", "claude"}, "dev"},
		{[]string{"-n", "dev", "ask", "--name", "session-1", "hi"}, "dev"},
		{[]string{"ask", "--name", "session-1", "hi"}, "sandbox"},
		{[]string{"ask", "-n", "session-1", "hi"}, "sandbox"},
		{[]string{"claude", "--name", "session-1"}, "sandbox"},
		{[]string{"ask", "--instance", "dev", "--name", "session-1", "hi"}, "dev"},
	} {
		r := cowork(t, "", tc.args...)
		if want := "instance " + tc.instance + " does not exist"; r.code != 1 || !strings.Contains(r.errOut, want) {
			t.Errorf("%q: got %+v, want %q", tc.args, r, want)
		}
	}
	// Global flags before a subcommand keep working for the others, and
	// help asked for before a command is that command's.
	if r := cowork(t, "", "--name", "dev", "status"); r.code != 1 || !strings.Contains(r.errOut, "instance dev does not exist") {
		t.Errorf("--name dev status: %+v", r)
	}
	if r := cowork(t, "", "--help", "ask"); r.code != 0 || !strings.Contains(r.out, "Claude Code flags") {
		t.Errorf("--help ask: %+v", r)
	}
	if r := cowork(t, "", "--help", "status"); r.code != 0 || !strings.Contains(r.out, "cowork status") {
		t.Errorf("--help status: %+v", r)
	}
	if r := cowork(t, "", "staus"); r.code != 2 || !strings.Contains(r.errOut, `unknown command "staus"`) || !strings.Contains(r.errOut, "status") {
		t.Errorf("a mistyped command: %+v", r)
	}
}

// An error the guest's agent sends back carries its text to the terminal:
// printed inert, with the exit status unchanged.
func TestErrorsFromTheGuestPrintInert(t *testing.T) {
	a := agenttest.Start(t)
	t.Setenv("COWORK_AGENT", a.Addr)
	// gRPC carries valid UTF-8 only; the rest of the attack goes through.
	r := cowork(t, "", "exec", "-w", "/no/"+strings.ToValidUTF8(termsafetest.Attack, "?"), "true")
	if r.code != 1 || !strings.Contains(r.errOut, "does not exist in the guest") {
		t.Fatalf("got %+v", r)
	}
	termsafetest.Check(t, "an error", r.errOut, true)
}

// Each subcommand's table name is the name cobra gives the command it
// builds, and the whole tree has each once: a command run on its own
// tree is the same command as in the whole tree.
func TestSubcommandTableMatchesTheTree(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	target := &cmdutil.AgentTarget{}
	var names []string
	for _, c := range subcommands(ios, target) {
		if got := c.build().Name(); got != c.name {
			t.Errorf("table entry %q builds command %q", c.name, got)
		}
		names = append(names, c.name)
		root := newCmdRoot(ios, c.name)
		if cmds := root.Commands(); len(cmds) != 1 || cmds[0].Name() != c.name {
			t.Errorf("the tree for %q holds %v", c.name, cmds)
		}
	}
	full := NewCmdRoot(ios)
	for _, n := range names {
		if c, _, err := full.Find([]string{n}); err != nil || c.Name() != n {
			t.Errorf("the whole tree has no %q", n)
		}
	}
	for _, word := range []string{"", "help", "completion", "__complete", "exce"} {
		if got := len(newCmdRoot(ios, word).Commands()); got != len(names) {
			t.Errorf("the tree for %q has %d commands, want all %d", word, got, len(names))
		}
	}
}

func TestCommandWord(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"exec", "true"}, "exec"},
		{[]string{"--name", "exec", "status"}, "status"},
		{[]string{"-n", "dev", "--agent", "unix:///a", "exec", "ls"}, "exec"},
		{[]string{"--name=dev", "-ndev", "ask", "hi"}, "ask"},
		{[]string{"--help", "status"}, "status"},
		{[]string{"--", "exec"}, ""},
		{[]string{"--version"}, ""},
	} {
		if got := commandWord(c.args); got != c.want {
			t.Errorf("commandWord(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}
