package ask

import (
	"fmt"
	"io"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
)

// parseBudget reads --max-tokens-total and --max-cost (the last of each
// given) into o.Budget: a usage error, with the fix, for a value that is
// no limit.
func (o *Options) parseBudget(own map[string][]string) error {
	if v := own["--max-tokens-total"]; len(v) > 0 {
		n, err := cmdutil.ParseTokens(v[len(v)-1])
		if err != nil {
			return cmdutil.FlagErrorf("--max-tokens-total %q: %v", v[len(v)-1], err)
		}
		o.Budget.MaxTokensTotal = n
	}
	if v := own["--max-cost"]; len(v) > 0 {
		x, err := cmdutil.ParseUSD(v[len(v)-1])
		if err != nil {
			return cmdutil.FlagErrorf("--max-cost %q: %v", v[len(v)-1], err)
		}
		o.Budget.MaxCostUSD = x
	}
	return nil
}

// PrintUsage is the line ask and claude print on stderr once the run ended: what
// the relay counted, which is what the API billed (Claude Code's own
// footer is its estimate).
func PrintUsage(w io.Writer, u *cowork.Usage) {
	if u == nil || u.Requests == 0 && u.Refused == 0 {
		return
	}
	calls := "calls"
	if u.Requests == 1 {
		calls = "call"
	}
	line := fmt.Sprintf("cowork: %d API %s, %s tokens (in %s, out %s, cache write %s, cache read %s), %s",
		u.Requests, calls, budget.Tokens(u.Tokens()), budget.Tokens(u.InputTokens), budget.Tokens(u.OutputTokens),
		budget.Tokens(u.CacheCreationInputTokens), budget.Tokens(u.CacheReadInputTokens), budget.USD(u.CostUSD))
	if u.EstimatedTokens > 0 {
		line += fmt.Sprintf(" (%s tokens estimated)", budget.Tokens(u.EstimatedTokens))
	}
	if u.Unpriced > 0 {
		line += " (some at the price of an unknown model)"
	}
	if u.Refused > 0 {
		line += fmt.Sprintf("; %d refused by the budget", u.Refused)
	}
	fmt.Fprintln(w, line)
}
