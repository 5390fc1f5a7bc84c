// Package claude is `cowork claude`: Claude Code, interactive, in the guest.
package claude

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/ask"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// NewCmdClaude builds the command; name is the global --name.
func NewCmdClaude(ios *iostreams.IOStreams, name *string, runF func(*ask.Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "claude [flags] [PROMPT]",
		Short: "Start Claude Code interactively in the sandbox",
		Long: `Start Claude Code on a pseudo-terminal in the guest, as user cowork, in
/workspace (or /workspace/NAME with --project), with permission checks skipped
(the VM is the sandbox; --no-skip-permissions keeps them). Every Claude Code
flag is forwarded as given: -c/--continue, -r/--resume, --model, and the rest.
The credential stays on this machine, as with cowork ask.`,
		Example: `  cowork claude
  cowork claude --project myapp -c
  cowork claude --model opus "look at the failing test"`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := ask.ParseInteractive(ios, *name, args)
			if errors.Is(err, ask.ErrHelp) {
				fmt.Fprint(ios.Out, ask.Help(cmd))
				return nil
			}
			if err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	// `cowork help claude` and `cowork --help claude` list Claude Code's flags too.
	cmd.SetHelpFunc(func(cmd *cobra.Command, _ []string) { fmt.Fprint(ios.Out, ask.Help(cmd)) })
	return cmd
}

func run(ctx context.Context, o *ask.Options) error {
	c, cred, err := ask.Connect(o)
	if err != nil {
		return err
	}
	defer c.Close()
	var eo agentclient.ExecOptions
	var spent *cowork.Usage
	err = guestrun.Attach(ctx, o.IO, o.IO.IsStdinTTY(), &eo, func(ctx context.Context) (agentclient.ExitStatus, error) {
		co := clientOptions(o, cred, &eo, os.Getenv)
		co.OnUsage = func(u *cowork.Usage) { spent = u }
		return c.Claude(ctx, co)
	})
	// Once the terminal is itself again: claude's own screen is gone.
	ask.PrintUsage(o.IO.ErrOut, spent)
	return err
}

// clientOptions is the run the client is asked for: the parsed command
// line, the host's forwarded settings, and the terminal guestrun set up
// (its TERM among eo.Env).
func clientOptions(o *ask.Options, cred cowork.Credential, eo *agentclient.ExecOptions, getenv func(string) string) cowork.ClaudeOptions {
	return cowork.ClaudeOptions{
		Project: o.Project, Args: o.ClaudeArgs, AskPermissions: o.AskPermissions, Budget: o.Budget,
		Credential: cred, Env: append(cowork.ForwardedEnv(getenv), eo.Env...),
		Stdin: eo.Stdin, Stdout: eo.Stdout, Stderr: eo.Stderr,
		TTY: eo.TTY, Resize: eo.Resize, Signals: eo.Signals,
	}
}
