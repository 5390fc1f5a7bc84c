// Package shell is `cowork shell`: an interactive login shell in the guest.
package shell

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/exec"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// Options is a parsed `cowork shell` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Connect func() (*agentclient.Client, error)
	Workdir string
	User    string
}

// NewCmdShell builds the command; runF replaces the run step in tests.
func NewCmdShell(ios *iostreams.IOStreams, connect func() (*agentclient.Client, error), runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios, Connect: connect}
	cmd := &cobra.Command{
		Use:   "shell",
		Short: "Open a login shell in the sandbox",
		Long: `Open the guest user's login shell on a pseudo-terminal, in /workspace.

With stdin not a terminal (a pipe or a file), no pseudo-terminal is made and
the shell reads its commands from stdin, as ssh does.`,
		Example: `  cowork shell
  cowork shell -w /tmp
  cowork shell -u root
  echo 'uname -a' | cowork shell`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVarP(&o.Workdir, "workdir", "w", exec.DefaultWorkdir, "working directory in the guest")
	cmd.Flags().StringVarP(&o.User, "user", "u", "", "guest user (default: the agent's default user, cowork)")
	return cmd
}

// loginShell starts the user's own shell (SHELL comes from the guest's
// passwd) as a login shell.
var loginShell = []string{"sh", "-c", `exec "${SHELL:-/bin/sh}" -l`}

func run(ctx context.Context, o *Options) error {
	client, err := o.Connect()
	if err != nil {
		return err
	}
	defer client.Close()
	return guestrun.Run(ctx, o.IO, client, guestrun.Options{
		Argv: loginShell,
		Dir:  o.Workdir,
		User: o.User,
		TTY:  o.IO.IsStdinTTY(),
	})
}
