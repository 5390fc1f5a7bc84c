package policycmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	execcmd "github.com/coworkhq/cowork/cmd/cowork/exec"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/hostd/netstack/policy/suggest"
)

func newCmdLearn(o *Options, exec func(*cobra.Command, string, []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "learn [flags] [-- COMMAND [ARG...]]",
		Short: "Let a task reach what the policy does not list, record it, then suggest a policy",
		Long: `Put the running instance's network in learn mode for one task, then print what
cowork policy suggest would for that time: the allowlist the task needed.

In learn mode what the policy refuses only because it is not listed (an
unlisted name in allowlist mode) is let through, and each such audit line
says "learn": true, so the log never reads as if the policy had allowed it.
What the policy refuses on purpose stays refused: the host itself and its
unexposed ports, private, link-local and metadata addresses, the host's
LANs, and your deny list. The mode is never saved, and ends with this
command however it ends (Ctrl-C, a kill), or after --for, or 8 hours; the
connections it alone let through are closed then. In default mode, which
lets the internet through anyway, it lets nothing more through: the
suggestion is made from the task's traffic all the same.

With a COMMAND, it runs in the guest as cowork exec runs it (bash -lc, in
/workspace), its output on stderr, and learning ends when it does; cowork
then exits with its code. Without one, learning lasts until Ctrl-C or --for:
run the task meanwhile from another terminal (cowork ask, cowork shell).
The suggestion goes to stdout, a policy file for cowork policy apply.`,
		Example: `  cowork policy learn -- npm ci > proposal.txt
  cowork policy learn --for 30m > proposal.txt     # cowork ask ... in another terminal
  cowork policy apply --from proposal.txt`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.For < 0 {
				return cmdutil.FlagErrorf("--for %s: want how long to learn, like 30m (0: until Ctrl-C)", o.For)
			}
			if o.Top < 1 || o.Top > suggest.MaxTracked {
				return cmdutil.FlagErrorf("--top %d: want 1 to %d", o.Top, suggest.MaxTracked)
			}
			return exec(cmd, "learn", args)
		},
	}
	cmd.Flags().SetInterspersed(false) // flags after COMMAND belong to it
	cmd.Flags().DurationVar(&o.For, "for", 0, "end learning after this long (0: when COMMAND ends, or at Ctrl-C)")
	suggestFlags(cmd, o)
	return cmd
}

// runLearn learns for the task, then prints the suggestion for its time.
func runLearn(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	l, err := inst.Learn(ctx, o.For)
	if err != nil {
		return fmt.Errorf("learn mode: %w", err)
	}
	defer l.Close()
	fmt.Fprintf(o.IO.ErrOut, "learning on %s: what its policy does not list is let through and recorded; the host, private addresses and the deny list stay denied\n", o.Name)
	taskErr := learnDuring(ctx, o, inst, l)
	l.Close()
	until := time.Now()
	if err := l.Err(); err != nil {
		fmt.Fprintf(o.IO.ErrOut, "cowork: learn mode ended early: %v\n", err)
	}
	if taskErr != nil && !isExit(taskErr) {
		return taskErr // nothing ran: nothing to suggest
	}
	so := o.suggestOptions()
	so.Since, so.Until = l.Since, until
	s, err := inst.SuggestPolicy(ctx, so)
	if err != nil {
		return err
	}
	if err := printSuggestion(o, s); err != nil {
		return err
	}
	fmt.Fprintf(o.IO.ErrOut, "learned from %s to %s; a flow still open then is recorded when it closes (%s policy suggest --since %s sees it)\n",
		l.Since.Local().Format("15:04:05"), until.Local().Format("15:04:05"), coworkOn(o.Name), l.Since.Local().Format(sinceLayout))
	return taskErr
}

// learnDuring waits out the task: the command's run, else Ctrl-C, --for,
// or learn mode's own end.
func learnDuring(ctx context.Context, o *Options, inst *cowork.Instance, l *cowork.Learning) error {
	if len(o.Args) > 0 {
		agent, err := inst.Agent()
		if err != nil {
			return err
		}
		defer agent.Close()
		// stdout is the suggestion's: the command's output goes to stderr.
		ios := *o.IO
		ios.Out = o.IO.ErrOut
		return guestrun.Run(ctx, &ios, agent, guestrun.Options{Argv: execcmd.Argv(o.Args, false), Dir: execcmd.DefaultWorkdir})
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var deadline <-chan time.Time
	if o.For > 0 {
		t := time.NewTimer(o.For)
		defer t.Stop()
		deadline = t.C
	} else if o.IO.IsStderrTTY() {
		fmt.Fprintln(o.IO.ErrOut, "run the task now (cowork ask, cowork exec, cowork shell in another terminal); Ctrl-C here ends learning")
	}
	select {
	case <-ctx.Done():
	case <-deadline:
	case <-l.Done():
	}
	return nil
}

func isExit(err error) bool {
	var exit *cmdutil.ExitError
	return errors.As(err, &exit)
}
