// Package fleet is `cowork fleet`: many sandboxes at once, each a
// throwaway clone of one instance.
package fleet

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/ask"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// NewCmdFleet builds `cowork fleet` and its subcommands; name is the
// global --name. runF, if set, gets fleet ask's options instead of a run.
func NewCmdFleet(ios *iostreams.IOStreams, name *string, runF func(*ask.FleetOptions) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet <command>",
		Short: "Run many throwaway sandboxes at once",
		Long: `Run many tasks at once, each in a throwaway clone of the instance that is
deleted when its task ends (as cowork ask --rm does for one).`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	askCmd := &cobra.Command{
		Use:   "ask [flags] [PROMPT]",
		Short: "Ask Claude Code many times at once, each in a throwaway clone",
		Long: `Run cowork ask many times at once, each task in a throwaway clone of the
instance (cowork ask --rm): --count N asks one prompt N times, --tasks FILE
asks each task of the file once. At most --parallel tasks run at a time;
the rest wait for a slot.

On this machine the clones come from one snapshot of the instance (its
pool's, else the one its disk sits on, else its newest, else "base", taken
then of the stopped instance) and from its pool when one is ready there.
On a cluster (--backend kubevirt) each clone's disk is a clone of the
instance's own, which must be stopped.

What each task wrote to /workspace stays, as with ask --rm: tasks that
write the same files there race. Give each its own --project (a task's
"project" in the file) to keep them apart. On a cluster, /workspace is
the clone's own and goes with it.

Each task's output lines are tagged with its id ([01] ...) on stdout, its
messages on stderr; --out DIR keeps them in DIR/ID.out and DIR/ID.err
(the messages stay tagged on stderr too), made before any task runs in a
folder that holds none of them. A table of the tasks ends the run on stderr (--json prints the
results on stdout instead, each task's output in it, at most 1 MiB).

Every Claude Code flag, and ask's --project, --max-tokens-total and
--max-cost, apply to each task (the limits to each task's own spending).
The exit code is 0 when every task exited 0, 1 when any did not, 130
after Ctrl-C: tasks not started then are not run, running ones are
interrupted as ask's are, and every clone is deleted. A closed output
(| head) starts no more tasks either.

The tasks file has one task per line: a prompt, or a JSON object with
"prompt" and optionally "id" (default: its line number) and "project".
Blank lines and lines starting with # are skipped.`,
		Example: `  cowork fleet ask --count 3 "write a haiku about sandboxes"
  cowork fleet ask --tasks tasks.txt --parallel 4 --out results/
  cowork --name dev fleet ask --count 5 --json "run the tests" | jq '.[] | {id, exit_code}'`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := ask.ParseFleet(ios, *name, args)
			if errors.Is(err, ask.ErrHelp) {
				fmt.Fprint(ios.Out, ask.FleetHelp(cmd))
				return nil
			}
			if err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return ask.RunFleet(cmd.Context(), o)
		},
	}
	askCmd.SetHelpFunc(func(cmd *cobra.Command, _ []string) { fmt.Fprint(ios.Out, ask.FleetHelp(cmd)) })
	cmd.AddCommand(askCmd)
	return cmd
}
