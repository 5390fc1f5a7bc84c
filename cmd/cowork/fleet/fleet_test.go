package fleet

import (
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/ask"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func TestFleetAskParsesItsCommandLine(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	name := "dev"
	var got *ask.FleetOptions
	cmd := NewCmdFleet(ios, &name, func(o *ask.FleetOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"ask", "--count", "2", "--model", "opus", "hello"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Instance != "dev" || len(got.Tasks) != 2 || got.Tasks[1].Prompt != "hello" || got.ClaudeArgs[1] != "opus" {
		t.Errorf("options %+v", got)
	}
}

func TestFleetHelpAndMistakes(t *testing.T) {
	ios, _, out, _ := iostreams.Test()
	name := "dev"
	cmd := NewCmdFleet(ios, &name, func(*ask.FleetOptions) error { t.Fatal("ran"); return nil })
	cmd.SetArgs([]string{"ask", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fleet ask [flags] [PROMPT]", "--count <n>", "--tasks <file>", "--parallel <n>", "Claude Code flags", "--model"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "--rm ") {
		t.Errorf("help offers --rm, which fleet ask refuses")
	}

	for _, args := range [][]string{{"asks"}, {"ask", "--count", "-1", "x"}} {
		cmd := NewCmdFleet(ios, &name, func(*ask.FleetOptions) error { t.Fatal("ran"); return nil })
		cmd.SetArgs(args)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		if err := cmd.Execute(); cmdutil.ExitCode(err) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
