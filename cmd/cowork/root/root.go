// Package root assembles the cowork command tree and runs it.
package root

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coworkhq/cowork/cmd/cowork/ask"
	"github.com/coworkhq/cowork/cmd/cowork/claude"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/deletecmd"
	"github.com/coworkhq/cowork/cmd/cowork/diskcmd"
	execcmd "github.com/coworkhq/cowork/cmd/cowork/exec"
	"github.com/coworkhq/cowork/cmd/cowork/initcmd"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/policycmd"
	"github.com/coworkhq/cowork/cmd/cowork/proxycmd"
	"github.com/coworkhq/cowork/cmd/cowork/shell"
	"github.com/coworkhq/cowork/cmd/cowork/start"
	"github.com/coworkhq/cowork/cmd/cowork/status"
	"github.com/coworkhq/cowork/cmd/cowork/stop"
	"github.com/coworkhq/cowork/cmd/cowork/version"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// NewCmdRoot builds the whole command tree on the given streams.
func NewCmdRoot(ios *iostreams.IOStreams) *cobra.Command {
	target := &cmdutil.AgentTarget{ErrOut: ios.ErrOut}
	root := &cobra.Command{
		Use:   "cowork <command>",
		Short: "Claude Code in a disposable Linux VM on your machine",
		Long: `cowork runs Claude Code, and any command, in a real Ubuntu VM on your machine:
safer than running it on the host, with one shared folder (~/cowork-workspace
at /workspace) and every network byte it sends on the record.`,
		Example: `  cowork init                         # create and start the VM
  cowork ask "write hello world"      # ask Claude Code
  cowork exec "python3 --version"     # run a command
  cowork shell                        # open a shell in the VM`,
		Version:       buildinfo.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// The global flags are read where they stand, before the subcommand:
		// ask and claude forward every flag after them to Claude Code, whose
		// -n/--name is a session name, so in `cowork --name dev ask` the
		// name must have chosen the instance before ask sees its arguments.
		TraverseChildren: true,
		// With TraverseChildren cobra no longer rejects an unknown command
		// itself, and a root that cannot run would answer it with help.
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		// `cowork --help status` is read as cowork's --help before status:
		// answer it with status's help, as cobra does without traversal.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.HasParent() && cmd.Root().Flags().Changed("help") {
				return pflag.ErrHelp
			}
			return nil
		},
		SuggestionsMinimumDistance: 2,
	}
	// Known before traversal, so that in `cowork --help ask` ask is not
	// taken for --help's value.
	root.InitDefaultHelpFlag()
	root.InitDefaultVersionFlag()
	root.SetIn(ios.In)
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.SetVersionTemplate("cowork {{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })

	pf := root.PersistentFlags()
	pf.StringVarP(&target.Instance, "name", "n", instance.DefaultName, "instance to act on")
	pf.StringVar(&target.Address, "agent", "", "talk to this agent directly instead of the instance's (unix:///path; or $"+cmdutil.AgentEnv+")")
	_ = root.RegisterFlagCompletionFunc("name", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names, _ := instance.List()
		return names, cobra.ShellCompDirectiveNoFileComp
	})

	connect := func() (*agentclient.Client, error) { return target.Connect() }
	root.AddCommand(
		execcmd.NewCmdExec(ios, connect, nil),
		shell.NewCmdShell(ios, connect, nil),
		claude.NewCmdClaude(ios, &target.Instance, nil),
		ask.NewCmdAsk(ios, &target.Instance, nil),
		version.NewCmdVersion(ios, nil),
		initcmd.NewCmdInit(ios, &target.Instance, nil),
		start.NewCmdStart(ios, &target.Instance, nil),
		stop.NewCmdStop(ios, &target.Instance, nil),
		status.NewCmdStatus(ios, &target.Instance, nil),
		deletecmd.NewCmdDelete(ios, &target.Instance, nil),
		policycmd.NewCmdPolicy(ios, &target.Instance, nil),
		proxycmd.NewCmdProxy(ios, &target.Instance, nil),
		diskcmd.NewCmdDisk(ios, &target.Instance, nil),
	)
	return root
}

// Main runs cowork with args and returns the process exit code.
func Main(ctx context.Context, ios *iostreams.IOStreams, args []string) int {
	cmd := NewCmdRoot(ios)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	// An error can carry what the guest said (an agent's refusal, a stop
	// reason, the console's last lines): shown, never obeyed.
	var exit *cmdutil.ExitError
	var flagErr *cmdutil.FlagError
	switch {
	case errors.As(err, &exit):
		if exit.Msg != "" {
			fmt.Fprintln(ios.ErrOut, "cowork:", termsafe.Text(exit.Msg))
		}
	case errors.As(err, &flagErr):
		fmt.Fprintf(ios.ErrOut, "cowork: %s\nRun 'cowork --help' for usage.\n", termsafe.Text(err.Error()))
	default:
		fmt.Fprintln(ios.ErrOut, "cowork:", termsafe.Text(err.Error()))
	}
	return cmdutil.ExitCode(err)
}
