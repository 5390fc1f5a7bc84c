package policycmd

import (
	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// newCmdBudget is `cowork policy budget`: the instance's daily budget.
// Its flags reach edit as Args ("--daily-tokens", N...), so that a test
// sees them in Options as it sees the other subcommands' arguments.
func newCmdBudget(exec func(cmd *cobra.Command, action string, args []string) error) *cobra.Command {
	var tokens, cost string
	cmd := &cobra.Command{
		Use:   "budget [off] [--daily-tokens N] [--daily-cost USD]",
		Short: "Limit what Claude Code may spend on the API in a day (UTC)",
		Long: `Set the instance's daily budget: the tokens its API calls may count in a UTC
day (input, output, cache writes and reads), their cost in US dollars at
cowork's prices, or both. Once it is reached the credential relay refuses
the day's next calls of every ask and claude session, and throwaway runs of
the instance, with an error Claude Code shows; the audit log says why. 0
removes one limit, off both. cowork usage shows what was spent.`,
		Example: `  cowork policy budget --daily-tokens 5M --daily-cost 20
  cowork policy budget --daily-cost 0
  cowork policy budget off`,
		RunE: func(cmd *cobra.Command, args []string) error {
			off := len(args) == 1 && args[0] == "off"
			given := cmd.Flags().Changed("daily-tokens") || cmd.Flags().Changed("daily-cost")
			if len(args) > 1 || len(args) == 1 && !off || off == given {
				return cmdutil.FlagErrorf("cowork policy budget takes --daily-tokens N, --daily-cost USD, or off")
			}
			if off {
				return exec(cmd, "budget", []string{"off"})
			}
			var a []string
			if cmd.Flags().Changed("daily-tokens") {
				a = append(a, "--daily-tokens", tokens)
			}
			if cmd.Flags().Changed("daily-cost") {
				a = append(a, "--daily-cost", cost)
			}
			return exec(cmd, "budget", a)
		},
	}
	cmd.Flags().StringVar(&tokens, "daily-tokens", "", "the tokens a day may count: 5000000, 5M, 500k (0: no limit)")
	cmd.Flags().StringVar(&cost, "daily-cost", "", "the US dollars a day may cost: 20, 2.50 (0: no limit)")
	return cmd
}

// editBudget changes p's daily budget as newCmdBudget's Args say.
func editBudget(p *policy.Policy, args []string) error {
	b := policy.Budget{}
	if p.Budget != nil {
		b = *p.Budget
	}
	if len(args) == 1 && args[0] == "off" {
		p.Budget = nil
		return nil
	}
	for i := 0; i+1 < len(args); i += 2 {
		v := args[i+1]
		switch args[i] {
		case "--daily-tokens":
			if v == "0" {
				b.DailyTokens = 0
				continue
			}
			n, err := cmdutil.ParseTokens(v)
			if err != nil {
				return cmdutil.FlagErrorf("--daily-tokens %q: %v, or 0 for none", v, err)
			}
			b.DailyTokens = n
		case "--daily-cost":
			if v == "0" {
				b.DailyCostUSD = 0
				continue
			}
			x, err := cmdutil.ParseUSD(v)
			if err != nil {
				return cmdutil.FlagErrorf("--daily-cost %q: %v, or 0 for none", v, err)
			}
			b.DailyCostUSD = x
		}
	}
	p.Budget = &b
	if b == (policy.Budget{}) {
		p.Budget = nil
	}
	return nil
}
