// Package claude is `cowork claude`: Claude Code, interactive, in the guest.
package claude

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/exec"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// Options is a parsed `cowork claude` command line.
type Options struct {
	IO         *iostreams.IOStreams
	Connect    func() (*agentclient.Client, error)
	Workdir    string
	ClaudeArgs []string
}

// NewCmdClaude builds the command; runF replaces the run step in tests.
func NewCmdClaude(ios *iostreams.IOStreams, connect func() (*agentclient.Client, error), runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios, Connect: connect}
	cmd := &cobra.Command{
		Use:   "claude [flags] [-- CLAUDE-ARGS...]",
		Short: "Start Claude Code interactively in the sandbox",
		Long: `Start Claude Code on a pseudo-terminal in the guest, in /workspace, as the
guest user cowork. Arguments after -- go to claude unchanged.`,
		Example: `  cowork claude
  cowork claude -- --model opus
  cowork claude -w /workspace/myapp`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ClaudeArgs = args
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVarP(&o.Workdir, "workdir", "w", exec.DefaultWorkdir, "working directory in the guest")
	return cmd
}

// Argv runs claude through a login shell, so that wherever its installer
// put it (npm's global bin, ~/.local/bin) is on PATH.
func Argv(claudeArgs []string) []string {
	return append([]string{"bash", "-lc", `exec claude "$@"`, "claude"}, claudeArgs...)
}

func run(ctx context.Context, o *Options) error {
	client, err := o.Connect()
	if err != nil {
		return err
	}
	defer client.Close()
	return guestrun.Run(ctx, o.IO, client, guestrun.Options{
		Argv: Argv(o.ClaudeArgs),
		Dir:  o.Workdir,
		TTY:  o.IO.IsStdinTTY(),
	})
}
