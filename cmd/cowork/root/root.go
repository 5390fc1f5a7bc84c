// Package root assembles the cowork command tree and runs it.
package root

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coworkhq/cowork/cmd/cowork/ask"
	"github.com/coworkhq/cowork/cmd/cowork/auditcmd"
	"github.com/coworkhq/cowork/cmd/cowork/claude"
	"github.com/coworkhq/cowork/cmd/cowork/clonecmd"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cpcmd"
	"github.com/coworkhq/cowork/cmd/cowork/dashboardcmd"
	"github.com/coworkhq/cowork/cmd/cowork/deletecmd"
	"github.com/coworkhq/cowork/cmd/cowork/diskcmd"
	execcmd "github.com/coworkhq/cowork/cmd/cowork/exec"
	"github.com/coworkhq/cowork/cmd/cowork/fleet"
	"github.com/coworkhq/cowork/cmd/cowork/imagecmd"
	"github.com/coworkhq/cowork/cmd/cowork/initcmd"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/listcmd"
	"github.com/coworkhq/cowork/cmd/cowork/mountcmd"
	"github.com/coworkhq/cowork/cmd/cowork/policycmd"
	"github.com/coworkhq/cowork/cmd/cowork/poolcmd"
	"github.com/coworkhq/cowork/cmd/cowork/portcmd"
	"github.com/coworkhq/cowork/cmd/cowork/proxycmd"
	"github.com/coworkhq/cowork/cmd/cowork/secretcmd"
	"github.com/coworkhq/cowork/cmd/cowork/shell"
	"github.com/coworkhq/cowork/cmd/cowork/snapshotcmd"
	"github.com/coworkhq/cowork/cmd/cowork/start"
	"github.com/coworkhq/cowork/cmd/cowork/status"
	"github.com/coworkhq/cowork/cmd/cowork/stop"
	"github.com/coworkhq/cowork/cmd/cowork/suspend"
	"github.com/coworkhq/cowork/cmd/cowork/usagecmd"
	"github.com/coworkhq/cowork/cmd/cowork/version"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// NewCmdRoot builds the whole command tree on the given streams.
func NewCmdRoot(ios *iostreams.IOStreams) *cobra.Command { return newCmdRoot(ios, "") }

// newCmdRoot builds the root command with only the subcommand named only,
// or with all of them when only is "" or names none. A run needs one
// subcommand; building the other twelve (their flag sets, cobra's
// completion command) was about 7% of a `cowork exec`'s CPU samples in
// perf. Help, completion and an unknown word (for cobra's suggestions)
// get the whole tree.
func newCmdRoot(ios *iostreams.IOStreams, only string) *cobra.Command {
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

	subs := subcommands(ios, target)
	if !slices.ContainsFunc(subs, func(c subcommand) bool { return c.name == only }) {
		only = ""
	}
	for _, c := range subs {
		if only == "" || c.name == only {
			root.AddCommand(c.build())
		}
	}
	if only != "" {
		root.CompletionOptions.DisableDefaultCmd = true // not the command run
	}
	return root
}

// subcommand is one of cowork's commands, built on demand.
type subcommand struct {
	name  string // the command's Name(): a test keeps the two the same
	build func() *cobra.Command
}

func subcommands(ios *iostreams.IOStreams, target *cmdutil.AgentTarget) []subcommand {
	connect := func() (*agentclient.Client, error) { return target.Connect() }
	name := &target.Instance
	return []subcommand{
		{"exec", func() *cobra.Command { return execcmd.NewCmdExec(ios, target, nil) }},
		{"shell", func() *cobra.Command { return shell.NewCmdShell(ios, connect, nil) }},
		{"cp", func() *cobra.Command { return cpcmd.NewCmdCp(ios, target, nil) }},
		{"claude", func() *cobra.Command { return claude.NewCmdClaude(ios, name, nil) }},
		{"ask", func() *cobra.Command { return ask.NewCmdAsk(ios, name, nil) }},
		{"fleet", func() *cobra.Command { return fleet.NewCmdFleet(ios, name, nil) }},
		{"version", func() *cobra.Command { return version.NewCmdVersion(ios, nil) }},
		{"init", func() *cobra.Command { return initcmd.NewCmdInit(ios, name, nil) }},
		{"start", func() *cobra.Command { return start.NewCmdStart(ios, name, nil) }},
		{"stop", func() *cobra.Command { return stop.NewCmdStop(ios, name, nil) }},
		{"suspend", func() *cobra.Command { return suspend.NewCmdSuspend(ios, name, nil) }},
		{"status", func() *cobra.Command { return status.NewCmdStatus(ios, name, nil) }},
		{"ls", func() *cobra.Command { return listcmd.NewCmdList(ios, nil) }},
		{"delete", func() *cobra.Command { return deletecmd.NewCmdDelete(ios, name, nil) }},
		{"policy", func() *cobra.Command { return policycmd.NewCmdPolicy(ios, name, nil) }},
		{"proxy", func() *cobra.Command { return proxycmd.NewCmdProxy(ios, name, nil) }},
		{"audit", func() *cobra.Command { return auditcmd.NewCmdAudit(ios, name, nil) }},
		{"dashboard", func() *cobra.Command { return dashboardcmd.NewCmdDashboard(ios, nil) }},
		{"disk", func() *cobra.Command { return diskcmd.NewCmdDisk(ios, name, nil) }},
		{"image", func() *cobra.Command { return imagecmd.NewCmdImage(ios, nil) }},
		{"clone", func() *cobra.Command { return clonecmd.NewCmdClone(ios, nil) }},
		{"snapshot", func() *cobra.Command { return snapshotcmd.NewCmdSnapshot(ios, name, nil) }},
		{"pool", func() *cobra.Command { return poolcmd.NewCmdPool(ios, name, nil) }},
		{"port", func() *cobra.Command { return portcmd.NewCmdPort(ios, name, nil) }},
		{"mount", func() *cobra.Command { return mountcmd.NewCmdMount(ios, name, nil) }},
		{"secret", func() *cobra.Command { return secretcmd.NewCmdSecret(ios, name, nil) }},
		{"usage", func() *cobra.Command { return usagecmd.NewCmdUsage(ios, name, nil) }},
	}
}

// commandWord is the word of args that names the subcommand: the first
// that is not a global flag or a global flag's value; "" when there is
// none before "--".
func commandWord(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return ""
		case a == "-n" || a == "--name" || a == "--agent":
			i++ // the flag's value
		case strings.HasPrefix(a, "-"):
		default:
			return a
		}
	}
	return ""
}

// Main runs cowork with args and returns the process exit code.
func Main(ctx context.Context, ios *iostreams.IOStreams, args []string) int {
	cmd := newCmdRoot(ios, commandWord(args))
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
