package policycmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/hostd/netstack/policy/suggest"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// suggestFlags adds the flags suggest and learn share to cmd.
func suggestFlags(cmd *cobra.Command, o *Options) {
	f := cmd.Flags()
	f.BoolVar(&o.JSON, "json", false, "print the suggestion as JSON (its policy under \"policy\")")
	f.IntVar(&o.Top, "top", suggest.DefaultTop, "list and propose at most this many names, and as many addresses, the most used first")
	f.BoolVar(&o.Group, "group", false, "propose *.DOMAIN for two or more new names under one registrable domain")
	f.BoolVar(&o.Prune, "prune", false, "drop the allow entries nothing in the period used")
}

func newCmdSuggest(o *Options, exec func(*cobra.Command, string, []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "suggest",
		Short: "Propose an allowlist from what the audit log shows the guest used",
		Long: `Read the audit log of a period (all of it kept, unless --since or --until say)
and propose an allowlist: the names and addresses the guest reached for,
allowed or denied, with their ports, counts and when they were first and
last seen, each marked:

  listed   an allow entry covers it already
  new      nothing covers it: the proposal adds it, as seen (--group: *.DOMAIN)
  denied   your deny list covers it, and wins: not proposed
  private  a private, link-local or host address (or a name that led only
           to one): never proposed; allowing one is your decision, by CIDR

The output is a policy file: the table is comments, then the proposal. Save
it, review it, and give it to cowork policy apply. Names in the log come from
the guest: one that is not a plain DNS name (a wildcard, a range, control
characters, a single label, .local and other special names) is listed as
rejected, escaped, and never proposed. Host ports are noted, never proposed
(cowork policy expose opens one). Damaged lines of the log are skipped and
counted; cowork audit verify checks it.`,
		Example: `  cowork policy suggest
  cowork policy suggest --since 2h > proposal.txt
  cowork policy suggest --since "2025-03-01 09:00" --until "2025-03-01 12:00" --group
  cowork policy suggest --json | jq '.names[] | select(.status == "new")'`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Top < 1 || o.Top > suggest.MaxTracked {
				return cmdutil.FlagErrorf("--top %d: want 1 to %d", o.Top, suggest.MaxTracked)
			}
			if !o.Since.IsZero() && !o.Until.IsZero() && o.Until.Before(o.Since) {
				return cmdutil.FlagErrorf("--until is before --since: the period is empty")
			}
			return exec(cmd, "suggest", nil)
		},
	}
	now := time.Now
	cmd.Flags().Var(&timeFlag{t: &o.Since, now: now}, "since", "read from this long ago, or this time (default: all of the log kept)")
	cmd.Flags().Var(&timeFlag{t: &o.Until, now: now}, "until", "read up to this long ago, or this time (default: now)")
	suggestFlags(cmd, o)
	return cmd
}

// runSuggest prints the suggestion for the instance's log.
func runSuggest(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	s, err := inst.SuggestPolicy(ctx, o.suggestOptions())
	if err != nil {
		return err
	}
	return printSuggestion(o, s)
}

func (o *Options) suggestOptions() cowork.SuggestOptions {
	return cowork.SuggestOptions{Since: o.Since, Until: o.Until, Top: o.Top, Group: o.Group, Prune: o.Prune}
}

// printSuggestion writes s as JSON or as a policy file, and says on
// stderr what the user should know before using it.
func printSuggestion(o *Options, s *cowork.PolicySuggestion) error {
	if s.Skipped > 0 {
		fmt.Fprintf(o.IO.ErrOut, "cowork: skipped %s of the audit log; check it with `%s audit verify`\n", plural(int64(s.Skipped), "damaged line"), coworkOn(o.Name))
	}
	if s.Records == 0 {
		fmt.Fprintf(o.IO.ErrOut, "cowork: no records of %s in the period: the proposal is only the policy it has, in allowlist mode\n", o.Name)
	}
	if o.JSON {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		_, err = o.IO.Out.Write(append(termsafe.JSON(b), '\n'))
		return err
	}
	return writeSuggestion(o.IO.Out, o.Name, s, time.Now())
}

// writeSuggestion writes s as a policy file: everything but the proposed
// rules is a comment. Only text cowork made or checked is printed as it
// is: names that passed the checks, addresses it parsed, its own notes.
// A rejected name is printed Go-quoted in ASCII, so that nothing in it
// can end the comment's line or drive the terminal.
func writeSuggestion(w io.Writer, name string, s *cowork.PolicySuggestion, now time.Time) error {
	b := &strings.Builder{}
	c := func(format string, args ...any) {
		line := strings.TrimRight("# "+fmt.Sprintf(format, args...), " ")
		b.WriteString(line + "\n")
	}
	c("Suggested network policy for %s, from its audit log: %s.", name, period(s, now))
	if s.Learned > 0 {
		c("%d of them were let through by learn mode only.", s.Learned)
	}
	if s.Current.Mode != policy.ModeAllowlist {
		c("%s is in default mode (the internet, not private networks); this proposal is an allowlist.", name)
	}
	c("")
	table(b, "NAME", s.Names, now)
	if len(s.Addrs) > 0 {
		c("")
		table(b, "ADDRESS", s.Addrs, now)
	}
	notes(c, s)
	c("")
	c("Ports are shown, not kept: a policy allows a destination on any port.")
	c("Review, then apply with: %s policy apply --from FILE (this output is one).", coworkOn(name))
	for _, line := range s.Policy.Describe() {
		b.WriteString(line + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// period says which records the suggestion read.
func period(s *cowork.PolicySuggestion, now time.Time) string {
	asked := ""
	switch {
	case !s.Since.IsZero() && !s.Until.IsZero():
		asked = fmt.Sprintf(" (asked: %s to %s)", stamp(s.Since, now, true), stamp(s.Until, now, true))
	case !s.Since.IsZero():
		asked = fmt.Sprintf(" (asked: since %s)", stamp(s.Since, now, true))
	case !s.Until.IsZero():
		asked = fmt.Sprintf(" (asked: until %s)", stamp(s.Until, now, true))
	}
	if s.Records == 0 {
		return "no records in the period" + asked
	}
	return fmt.Sprintf("%d records from %s to %s%s", s.Records, stamp(s.First, now, true), stamp(s.Last, now, true), asked)
}

// stamp is a time as a person reads it: the clock alone today.
func stamp(t, now time.Time, full bool) string {
	t, now = t.Local(), now.Local()
	if !full && t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// table writes destinations as comment lines.
func table(b *strings.Builder, head string, ds []*suggest.Dest, now time.Time) {
	var t strings.Builder
	tw := tabwriter.NewWriter(&t, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "# STATUS\t%s\tPORTS\tFLOWS\tDNS\tDENIED\tFIRST\tLAST\tNOTE\n", head)
	if len(ds) == 0 {
		fmt.Fprintf(tw, "# (none)\n")
	}
	for _, d := range ds {
		what := d.Name
		if what == "" {
			what = d.Addr
		}
		ports := strings.Join(d.Ports, ",")
		if ports == "" {
			ports = "-"
		}
		fmt.Fprintf(tw, "# %s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", d.Status, what, ports, d.Flows, d.Queries, d.Denied,
			stamp(d.First, now, false), stamp(d.Last, now, false), note(d))
	}
	tw.Flush()
	for _, line := range strings.SplitAfter(t.String(), "\n") {
		b.WriteString(strings.TrimRight(line, " \n"))
		if line != "" {
			b.WriteString("\n")
		}
	}
}

// note says what the proposal does with d, and why.
func note(d *suggest.Dest) string {
	var n string
	what := d.Name + d.Addr
	switch d.Status {
	case suggest.StatusListed:
		if d.Entry != what {
			n = "by allow " + d.Entry
		}
	case suggest.StatusNew:
		n = "proposed"
		if d.Entry != what {
			n = "proposed as " + d.Entry
		}
	case suggest.StatusDenied:
		n = "by deny " + d.Entry + ": stays denied"
	case suggest.StatusPrivate:
		n = d.Why
	}
	if d.Learned > 0 {
		n = strings.TrimSpace(fmt.Sprintf("%s (%d learned)", n, d.Learned))
	}
	return n
}

// notes writes what else the period showed.
func notes(c func(string, ...any), s *cowork.PolicySuggestion) {
	if s.LeftOut > 0 {
		c("")
		c("%d more destinations, less used, are neither shown nor proposed; --top shows more.", s.LeftOut)
	}
	if s.Untracked > 0 {
		c("%d records went to destinations past the first %d, and were not counted one by one.", s.Untracked, suggest.MaxTracked)
	}
	for _, hp := range s.HostPorts {
		c("")
		if hp.Exposed {
			c("Host port %d (host.cowork.internal:%d): %s; exposed.", hp.Port, hp.Port, plural(hp.Flows, "flow"))
			continue
		}
		c("Host port %d (host.cowork.internal:%d): %s, %d denied; never proposed.", hp.Port, hp.Port, plural(hp.Flows, "flow"), hp.Denied)
		c("  cowork policy expose %d lets the guest reach this machine's 127.0.0.1:%d.", hp.Port, hp.Port)
	}
	for _, g := range s.Groups {
		c("")
		if g.Proposed {
			c("%d names under %s, proposed as *.%s (--group): %s", len(g.Names), g.Domain, g.Domain, strings.Join(g.Names, " "))
		} else {
			c("%d names under %s: %s (--group proposes *.%s)", len(g.Names), g.Domain, strings.Join(g.Names, " "), g.Domain)
		}
	}
	if len(s.Unused) > 0 {
		c("")
		if len(s.Removed) > 0 {
			c("Allowed, unused in the period, dropped (--prune): %s", strings.Join(s.Removed, " "))
		} else {
			c("Allowed, unused in the period, kept (--prune drops them): %s", strings.Join(s.Unused, " "))
		}
	}
	if len(s.Rejected) > 0 {
		c("")
		c("Rejected, never proposed: %s named these, which are not names a policy may hold.", plural(s.RejectedRecords, "record"))
		for _, r := range s.Rejected {
			c("  %s  %s (%s)", strconv.QuoteToASCII(r.Name), r.Reason, plural(r.Count, "record"))
		}
	}
	if s.Skipped > 0 {
		c("")
		c("%s of the log skipped; cowork audit verify checks it.", plural(int64(s.Skipped), "damaged line"))
	}
}

// coworkOn is the command line that acts on the instance name.
func coworkOn(name string) string {
	if name == instance.DefaultName {
		return "cowork"
	}
	return "cowork --name " + name
}

// plural is "1 flow", "2 flows".
func plural(n int64, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}
