// Package mountcmd is `cowork mount`: the host folders an instance shares
// with its guest.
package mountcmd

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// Options is a parsed `cowork mount ls` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string // the instance (global --name)
	JSON bool
}

// NewCmdMount builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdMount(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "mount",
		Short: "List the host folders shared with the guest",
		Long: `The guest mounts the workspace at /workspace and, besides it, the folders
given with --mount to cowork init or cowork start (HOST[:GUEST][:ro]; start
replaces them, --no-mounts drops them). A read-only folder is served
read-only by this machine: root in the guest cannot write to it, even after
remounting it writable in the guest. What the guest makes in a writable one
belongs here to the folder's owner, as in the workspace.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the shared folders, the workspace first",
		Example: "  cowork mount ls\n  cowork mount ls --json",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	ls.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}

// Run carries out o.
func Run(o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	mounts := inst.Mounts()
	if o.JSON {
		return cmdutil.PrintJSON(o.IO.Out, mounts)
	}
	w := tabwriter.NewWriter(o.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tGUEST\tMODE")
	for _, m := range mounts {
		fmt.Fprintf(w, "%s\t%s\t%s\n", m.Host, m.Guest, m.Mode())
	}
	return w.Flush()
}
