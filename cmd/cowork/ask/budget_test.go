package ask

import (
	"bytes"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func TestParseBudgetFlags(t *testing.T) {
	for args, want := range map[string]cowork.Budget{
		"--max-tokens-total 200000 x":            {MaxTokensTotal: 200000},
		"--max-tokens-total 200k x":              {MaxTokensTotal: 200000},
		"--max-tokens-total 1.5M --max-cost 5 x": {MaxTokensTotal: 1500000, MaxCostUSD: 5},
		"--max-tokens-total=2_000_000 x":         {MaxTokensTotal: 2000000},
		"--max-cost $0.50 --model opus x":        {MaxCostUSD: 0.5},
		"x --max-cost 1 --max-cost 2":            {MaxCostUSD: 2},
	} {
		o, err := parse(t, "", strings.Fields(args)...)
		if err != nil || o.Budget != want || o.Prompt != "x" {
			t.Errorf("%s: %+v %v", args, o, err)
		}
		if strings.Contains(args, "opus") && strings.Join(o.ClaudeArgs, " ") != "--model opus" {
			t.Errorf("%s: claude gets %q", args, o.ClaudeArgs)
		}
	}
	// Values that are no limit are usage errors (exit 2) saying what to give.
	for args, want := range map[string]string{
		"--max-tokens-total 0 x":     `--max-tokens-total "0": want a whole number of tokens from 1 to 1,000,000,000,000, such as 200000, 200k or 2M`,
		"--max-tokens-total -5 x":    `--max-tokens-total "-5": want a whole number`,
		"--max-tokens-total 1.5 x":   `--max-tokens-total "1.5": want a whole number`,
		"--max-tokens-total lots x":  `--max-tokens-total "lots"`,
		"--max-tokens-total 1e9 x":   `--max-tokens-total "1e9"`,
		"--max-tokens-total 2000G x": `--max-tokens-total "2000G"`,
		"--max-cost 0 x":             `--max-cost "0": want US dollars above 0 and at most $1,000,000.00, such as 5 or 0.50`,
		"--max-cost NaN x":           `--max-cost "NaN"`,
		"--max-cost -1 x":            `--max-cost "-1"`,
		"--max-cost 1e7 x":           `--max-cost "1e7"`,
		"--max-cost x":               `--max-cost "x"`,
	} {
		_, err := parse(t, "", strings.Fields(args)...)
		if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v (exit %d)", args, err, cmdutil.ExitCode(err))
		}
	}
	// cowork claude takes them too.
	ios, _, _, _ := iostreams.Test()
	o, err := ParseInteractive(ios, "sandbox", []string{"--max-cost", "2", "-c"})
	if err != nil || o.Budget.MaxCostUSD != 2 || strings.Join(o.ClaudeArgs, " ") != "-c" {
		t.Fatalf("%+v %v", o, err)
	}
}

func TestPrintUsage(t *testing.T) {
	var b bytes.Buffer
	PrintUsage(&b, &cowork.Usage{Requests: 3, Refused: 1, InputTokens: 1200, OutputTokens: 350, CacheCreationInputTokens: 300, CacheReadInputTokens: 15000, CostUSD: 0.0166})
	PrintUsage(&b, &cowork.Usage{Requests: 1, InputTokens: 10, EstimatedTokens: 500, Unpriced: 1, CostUSD: 2.5})
	PrintUsage(&b, &cowork.Usage{})
	PrintUsage(&b, nil)
	want := "cowork: 3 API calls, 16,850 tokens (in 1,200, out 350, cache write 300, cache read 15,000), $0.0166; 1 refused by the budget\n" +
		"cowork: 1 API call, 510 tokens (in 10, out 0, cache write 0, cache read 0), $2.50 (500 tokens estimated) (some at the price of an unknown model)\n"
	if b.String() != want {
		t.Fatalf("%q", b.String())
	}
}
