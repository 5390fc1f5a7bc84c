// Package auditcmd is `cowork audit`: checks of the network audit log.
package auditcmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// Options is a parsed `cowork audit` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string // the instance (global --name)
	Verb string // verify
	JSON bool
}

// NewCmdAudit builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdAudit(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the network audit log",
		Long: `Every line of the network audit log (network.jsonl, see cowork proxy)
carries its number (seq) and a MAC made with a key this machine keeps in the
instance's folder (audit.key), never in the guest: each MAC covers the line
and the MAC before it, so a line edited, removed, moved or added without the
key shows. An anchor (audit.head) names the last record, so that lines cut
from the end show too.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check that the network audit log is whole and unchanged",
		Long: `Check the chain of the network audit log, network.jsonl and its rotated
files, and say where it breaks: each problem on a line of its own, naming
the file, and the line and the record's seq where it is at one. Exit status
0 when nothing shows tampering; 1 when something does, or when the log could
not be checked at all (with --json, an object with an "error" field then).

It reads the instance's files only: the instance may be stopped or running
(a record being written is left out). Records rotated away (past the 3 older
files kept) are gone by design: the check starts at the oldest file kept.
Lines written before cowork chained its log are counted and not checked.`,
		Example: `  cowork audit verify
  cowork --name dev audit verify --json | jq '.problems[]'`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Verb = *name, "verify"
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	verify.Flags().BoolVar(&o.JSON, "json", false, "print the result as JSON")
	cmd.AddCommand(verify)
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	if ctx == nil {
		ctx = context.Background()
	}
	v, err := verify(ctx, o.Name)
	if err != nil {
		if o.JSON { // a script reads stdout: it gets an answer there too
			if perr := cmdutil.PrintJSON(o.IO.Out, struct {
				Error string `json:"error"`
			}{err.Error()}); perr != nil {
				return perr
			}
		}
		return err
	}
	if o.JSON {
		if err := cmdutil.PrintJSON(o.IO.Out, v); err != nil {
			return err
		}
		if !v.OK {
			return &cmdutil.ExitError{Code: 1}
		}
		return nil
	}
	out := o.IO.Out
	if v.OK {
		fmt.Fprintf(out, "ok: %s\n", summary(v))
	} else {
		for _, p := range v.Problems {
			fmt.Fprintln(out, p.String())
		}
		if v.MoreProblems > 0 {
			fmt.Fprintf(out, "... and %d more problems (--json lists the first %d too)\n", v.MoreProblems, len(v.Problems))
		}
	}
	for _, n := range v.Notes {
		fmt.Fprintf(out, "note: %s\n", n)
	}
	if !v.OK {
		n := len(v.Problems) + v.MoreProblems
		return &cmdutil.ExitError{Code: 1, Msg: fmt.Sprintf("the audit log of %s fails verification: %d %s (see above); keep a copy of its folder before the instance starts again", o.Name, n, plural(n, "problem", "problems"))}
	}
	return nil
}

// verify checks the audit log of the instance name; an error means it
// could not be checked at all.
func verify(ctx context.Context, name string) (*cowork.AuditVerification, error) {
	inst, err := cowork.Open(name)
	if err != nil {
		return nil, err
	}
	if err := inst.LocalOnly(cowork.OpAuditLog); err != nil {
		return nil, err
	}
	v, err := inst.VerifyAudit(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit log of %s: %w", name, err)
	}
	return v, nil
}

// summary is "N records, seq A..B, across K files".
func summary(v *cowork.AuditVerification) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", v.Records, plural(int(v.Records), "record", "records"))
	if v.Records > 0 {
		fmt.Fprintf(&b, ", seq %d..%d", v.FirstSeq, v.LastSeq)
	}
	fmt.Fprintf(&b, ", across %d %s", len(v.Files), plural(len(v.Files), "file", "files"))
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
