// Package usagecmd is `cowork usage`: what an instance's Claude Code spent
// on the API, by day and by session, as the relay counted it.
package usagecmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// Options is a parsed `cowork usage` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string // the instance: the argument, else the global --name
	JSON bool
	// Days and Sessions are how many of the newest to show; 0 shows all
	// that are kept.
	Days, Sessions int
}

// NewCmdUsage builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdUsage(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "usage [NAME]",
		Short: "Show what Claude Code spent on the API, by day and by ask",
		Long: `Show the tokens and the cost of the instance's API calls, by UTC day and by
session (each ask or claude; a throwaway run's count as its parent's), as the
credential relay counted them from every answer: input, output, cache writes
and cache reads, priced with cowork's table of Anthropic's prices per million
tokens (built in; rows in $COWORK_HOME/prices.json replace or add to it; a
model the table does not name is priced at its highest prices). It reads the
instance's usage.json, so it works whether the instance runs or not.

Budgets: cowork ask --max-tokens-total N / --max-cost USD limit one run, and
cowork policy budget --daily-tokens N / --daily-cost USD the instance's day.`,
		Example: `  cowork usage
  cowork usage dev --days 30
  cowork usage --json | jq '.days[-1].cost_usd'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cmdutil.FlagErrorf("cowork usage takes one instance at most (or --name)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if len(args) == 1 {
				o.Name = args[0]
			}
			if o.Days < 0 || o.Sessions < 0 {
				return cmdutil.FlagErrorf("--days and --sessions take a count, 0 for all")
			}
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&o.Days, "days", 7, "the newest `N` days (0: all kept, up to 400)")
	cmd.Flags().IntVar(&o.Sessions, "sessions", 10, "the newest `N` sessions (0: all kept, up to 200)")
	return cmd
}

// Run carries out o.
func Run(o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	r, err := inst.Usage()
	if err != nil {
		return err
	}
	r.Days = newest(r.Days, o.Days)
	r.Sessions = newest(r.Sessions, o.Sessions)
	if o.JSON {
		return cmdutil.PrintJSON(o.IO.Out, r)
	}
	return Print(o.IO.Out, r)
}

func newest[T any](s []T, n int) []T {
	if n > 0 && len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Print writes the report for a reader: today against the daily budget,
// then the days and the sessions.
func Print(w io.Writer, r *cowork.UsageReport) error {
	var today budget.Totals
	for _, d := range r.Days {
		if d.Day == r.Today {
			today = d.Totals
		}
	}
	fmt.Fprintf(w, "%s today (%s, UTC): %s tokens, %s", r.Instance, r.Today, budget.Tokens(today.AllTokens()), budget.USD(today.CostUSD))
	if b := r.DailyBudget; b != nil && (b.DailyTokens > 0 || b.DailyCostUSD > 0) {
		var of []string
		if b.DailyTokens > 0 {
			of = append(of, budget.Tokens(b.DailyTokens)+" tokens")
		}
		if b.DailyCostUSD > 0 {
			of = append(of, budget.USD(b.DailyCostUSD))
		}
		fmt.Fprintf(w, " of a daily budget of %s", strings.Join(of, " and "))
	} else {
		fmt.Fprint(w, " (no daily budget)")
	}
	fmt.Fprintln(w)
	if len(r.Days) == 0 {
		fmt.Fprintln(w, "No API calls through the relay yet.")
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DAY (UTC)\tCALLS\tREFUSED\tINPUT\tOUTPUT\tCACHE WRITE\tCACHE READ\tTOKENS\tCOST\t")
	for _, d := range r.Days {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.Day, d.Requests, d.Refused, budget.Tokens(d.Input), budget.Tokens(d.Output),
			budget.Tokens(d.CacheWrite), budget.Tokens(d.CacheRead), budget.Tokens(d.AllTokens()), budget.USD(d.CostUSD))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Sessions) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED (UTC)\tSESSION\tWHAT\tCALLS\tTOKENS\tCOST\tBUDGET\tNOTE")
	for _, s := range r.Sessions {
		what := s.What
		if what == "" {
			what = "-"
		}
		if s.Instance != "" {
			what += " --rm"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Started.UTC().Format("2006-01-02 15:04"), s.ID, termsafe.Line(what), s.Requests,
			budget.Tokens(s.AllTokens()), budget.USD(s.CostUSD), limit(s.Limit), note(s))
	}
	return tw.Flush()
}

// limit is a session's own budget, as its flags gave it.
func limit(l budget.Limit) string {
	var parts []string
	if l.Tokens > 0 {
		parts = append(parts, budget.Tokens(l.Tokens)+" tokens")
	}
	if l.CostUSD > 0 {
		parts = append(parts, budget.USD(l.CostUSD))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// note says what a reader should know of a session: that a budget
// stopped it, that it still runs, that some of its count is estimated.
func note(s budget.Session) string {
	var n []string
	switch {
	case s.Refused > 0 && strings.Contains(s.Stopped, "daily budget"):
		n = append(n, fmt.Sprintf("%d refused: daily budget", s.Refused))
	case s.Refused > 0:
		n = append(n, fmt.Sprintf("%d refused: its budget", s.Refused))
	}
	if s.Ended.IsZero() {
		n = append(n, "running, or cut short")
	}
	if s.Estimated > 0 {
		n = append(n, budget.Tokens(s.Estimated)+" tokens estimated")
	}
	if s.Unpriced > 0 {
		n = append(n, fmt.Sprintf("%d priced as an unknown model", s.Unpriced))
	}
	return strings.Join(n, "; ")
}
