package claudecode

import (
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The table cowork carries is the pinned Claude Code's own: regenerate it
// (make claude-flags) when this fails after a version bump.
func TestFlagTableMatchesClaudeHelp(t *testing.T) {
	bin := os.Getenv("COWORK_CLAUDE")
	if bin == "" {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatal("COWORK_CLAUDE is not set (make test installs Claude Code from npm)")
		}
		t.Skip("Claude Code not installed; make test installs it")
	}
	version, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(version), Version+" ") {
		t.Fatalf("%s is %q, want the pinned %s (%v)", bin, version, Version, err)
	}
	help, err := exec.Command(bin, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	real, err := ParseHelp(string(help))
	if err != nil {
		t.Fatal(err)
	}
	if len(real) != len(Flags) {
		t.Errorf("claude --help has %d options, the table %d", len(real), len(Flags))
	}
	for i := range min(len(real), len(Flags)) {
		if !reflect.DeepEqual(real[i], Flags[i]) {
			t.Errorf("option %d: claude --help has %+v, the table %+v", i, real[i], Flags[i])
		}
	}
}

func TestParseHelpFormats(t *testing.T) {
	help := `Usage: claude [options] [command] [prompt]

Options:
  --add-dir <directories...>            More directories Claude can access
  --allowedTools, --allowed-tools <tools...>
      Comma or space-separated list of tool names to allow
  -c, --continue                        Continue the most recent conversation
  -d, --debug [filter]                  Enable debug mode with optional
                                        category filtering
  --model <model>                       Model for the current session

Commands:
  mcp                                   Configure MCP servers
`
	flags, err := ParseHelp(help)
	if err != nil {
		t.Fatal(err)
	}
	want := []Flag{
		{Long: "--add-dir", Arity: Variadic, Value: "<directories...>", Help: "More directories Claude can access"},
		{Long: "--allowed-tools", Aliases: []string{"--allowedTools"}, Arity: Variadic, Value: "<tools...>", Help: "Comma or space-separated list of tool names to allow"},
		{Long: "--continue", Short: "-c", Help: "Continue the most recent conversation"},
		{Long: "--debug", Short: "-d", Arity: OptionalValue, Value: "[filter]", Help: "Enable debug mode with optional category filtering"},
		{Long: "--model", Arity: RequiredValue, Value: "<model>", Help: "Model for the current session"},
	}
	if !reflect.DeepEqual(flags, want) {
		t.Fatalf("got %+v", flags)
	}
}

func TestParseArgs(t *testing.T) {
	own := []Flag{{Long: "--project", Arity: RequiredValue, Value: "<name>"}, {Long: "--no-skip-permissions"}}
	for _, tc := range []struct {
		args       []string
		claude     []string
		positional []string
		project    string
	}{
		{[]string{"say hi"}, nil, []string{"say hi"}, ""},
		{[]string{"--model", "opus", "--project", "web", "make it"}, []string{"--model", "opus"}, []string{"make it"}, "web"},
		{[]string{"--model=opus", "-c", "go on"}, []string{"--model=opus", "-c"}, []string{"go on"}, ""},
		// A variadic option takes arguments up to the next option...
		{[]string{"--allowed-tools", "Bash", "Edit", "--max-budget-usd", "1", "hi"}, []string{"--allowed-tools", "Bash", "Edit", "--max-budget-usd", "1"}, []string{"hi"}, ""},
		// ... so a prompt after one needs "--", as with claude itself.
		{[]string{"--allowedTools", "Bash", "--", "hi"}, []string{"--allowedTools", "Bash"}, []string{"hi"}, ""},
		// An optional value is taken unless it looks like an option.
		{[]string{"-r", "--model", "x", "hi"}, []string{"-r", "--model", "x"}, []string{"hi"}, ""},
		{[]string{"--resume", "abc-123", "hi"}, []string{"--resume", "abc-123"}, []string{"hi"}, ""},
		// A required value is the next argument, even one that starts with '-'.
		{[]string{"--system-prompt", "-be brief-", "hi"}, []string{"--system-prompt", "-be brief-"}, []string{"hi"}, ""},
		// Bundled short booleans.
		{[]string{"-pc", "hi"}, []string{"-p", "-c"}, []string{"hi"}, ""},
		{[]string{"-", "--verbose"}, []string{"--verbose"}, []string{"-"}, ""},
	} {
		p, err := ParseArgs(tc.args, own)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !slices.Equal(p.Claude, tc.claude) || !slices.Equal(p.Positional, tc.positional) || strings.Join(p.Own["--project"], "") != tc.project {
			t.Errorf("%q: claude %q positional %q own %v", tc.args, p.Claude, p.Positional, p.Own)
		}
	}
	for _, bad := range [][]string{{"--frobnicate"}, {"--model"}, {"--allowed-tools"}, {"--verbose=yes"}, {"-Z"}} {
		if _, err := ParseArgs(bad, own); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if p, _ := ParseArgs([]string{"--no-skip-permissions", "x"}, own); p == nil || len(p.Own["--no-skip-permissions"]) != 1 {
		t.Error("an own boolean flag was not recorded")
	}
}

func TestDecodeTranscripts(t *testing.T) {
	f, err := os.Open("testdata/tool-error.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var types []string
	var toolUse, toolErr, result *Event
	err = Decode(f, func(e *Event) error {
		types = append(types, e.Type)
		if e.Message != nil {
			for _, b := range e.Message.Content {
				if b.Type == "tool_use" {
					toolUse = e
				}
				if b.Type == "tool_result" && b.IsError {
					toolErr = e
				}
			}
		}
		if e.Type == "result" {
			result = e
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if toolUse == nil || toolUse.Message.Content[0].Name != "Bash" || toolUse.Message.Content[0].Input["command"] == nil {
		t.Fatalf("no Bash tool_use: %v", types)
	}
	if toolErr == nil || !strings.Contains(toolErr.Message.Content[0].ResultText(), "No such file") {
		t.Fatal("no failed tool_result")
	}
	if result == nil || result.NumTurns != 2 || result.TotalCostUSD <= 0 || result.SessionID == "" || result.IsError {
		t.Fatalf("result %+v", result)
	}
	// A line that is not JSON arrives as text.
	var got []*Event
	Decode(strings.NewReader("Error: invalid API key\n{\"type\":\"result\",\"result\":\"x\"}\n"), func(e *Event) error { got = append(got, e); return nil })
	if len(got) != 2 || got[0].Type != "text" || got[0].Result != "Error: invalid API key" || got[1].Type != "result" {
		t.Fatalf("got %+v", got)
	}
}
