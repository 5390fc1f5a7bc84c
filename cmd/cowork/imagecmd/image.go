// Package imagecmd is `cowork image`: the golden disks that `cowork init`
// keeps in the cache (one per image and provisioning) and clones.
package imagecmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/units"
)

// Options is a parsed `cowork image` command line.
type Options struct {
	IO    *iostreams.IOStreams
	Op    string // ls, rm or prune
	Keys  []string
	JSON  bool
	Force bool // prune without asking

	// The store, the daemon binary's by default (tests replace them).
	List   func(context.Context) ([]cowork.GoldenDisk, error)
	Remove func(context.Context, ...string) ([]cowork.GoldenDisk, error)
	Prune  func(context.Context) ([]cowork.GoldenDisk, error)
}

// NewCmdImage builds the command. runF, when not nil, gets the options
// instead of running them (tests).
func NewCmdImage(ios *iostreams.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios, List: cowork.ImageList, Remove: cowork.ImageRemove, Prune: cowork.ImagePrune}
	run := func(cmd *cobra.Command, op string, args []string) error {
		o.Op, o.Keys = op, args
		if runF != nil {
			return runF(o)
		}
		return Run(cmd.Context(), o)
	}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the golden disks init clones",
		Long: `The first init of an image and provisioning keeps the provisioned disk as a
golden disk in $COWORK_HOME/cache/golden; a later init of the same pair clones
it instead of provisioning. These commands list and free them. An instance
whose disk is a thin overlay on a golden disk (on file systems without
reflinks, like ext4) needs it: rm and prune never remove one in use.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the golden disks",
		Example: "  cowork image ls\n  cowork image ls --json",
		Args:    cmdutil.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd, "ls", args) },
	}
	ls.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:     "rm KEY...",
		Short:   "Remove golden disks no instance uses",
		Example: "  cowork image rm 3f2a9c1b07de",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.FlagErrorf("cowork image rm takes one or more KEYs (at least 4 digits each) from `cowork image ls`")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return run(cmd, "rm", args) },
	}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove every golden disk no instance uses",
		Long: `Remove every golden disk no instance's disk is an overlay on. The next init
of a removed one's image and provisioning provisions from scratch again.`,
		Example: "  cowork image prune\n  cowork image prune --force",
		Args:    cmdutil.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd, "prune", args) },
	}
	prune.Flags().BoolVarP(&o.Force, "force", "f", false, "do not ask for confirmation")
	cmd.AddCommand(ls, rm, prune)
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	switch o.Op {
	case "ls":
		all, err := o.List(ctx)
		if err != nil {
			return err
		}
		if o.JSON {
			if all == nil {
				all = []cowork.GoldenDisk{}
			}
			enc := json.NewEncoder(o.IO.Out)
			enc.SetIndent("", "  ")
			return enc.Encode(all)
		}
		w := tabwriter.NewWriter(o.IO.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tARCH\tIMAGE\tPROVISIONED WITH\tSIZE\tON DISK\tCREATED\tUSED BY")
		for _, d := range all {
			users := strings.Join(d.Users, ",")
			if users == "" {
				users = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(d.Key), d.Arch, d.Image, d.Provision,
				units.Size(d.Size), units.Size(d.Allocated), created(d.Created), users)
		}
		return w.Flush()
	case "rm":
		removed, err := o.Remove(ctx, o.Keys...)
		for _, d := range removed {
			fmt.Fprintf(o.IO.Out, "removed %s (%s freed)\n", short(d.Key), units.Size(d.Allocated))
		}
		return err
	case "prune":
		if !o.Force {
			yes, err := cmdutil.Confirm(o.IO, "cowork image prune", "Remove every golden disk no instance uses? The next init of their images provisions from scratch.", "--force")
			if err != nil {
				return err
			}
			if !yes {
				fmt.Fprintln(o.IO.ErrOut, "nothing removed")
				return &cmdutil.ExitError{Code: 1}
			}
		}
		removed, err := o.Prune(ctx)
		var freed int64
		for _, d := range removed {
			freed += d.Allocated
			fmt.Fprintf(o.IO.Out, "removed %s\n", short(d.Key))
		}
		fmt.Fprintf(o.IO.ErrOut, "%d golden %s removed, %s freed\n", len(removed), plural(len(removed)), units.Size(freed))
		return err
	}
	return cmdutil.FlagErrorf("cowork image: no command %q", o.Op)
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

// created is an RFC 3339 time as a listing shows it: to the minute.
func created(s string) string {
	if len(s) >= 16 {
		return strings.Replace(s[:16], "T", " ", 1)
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return "disk"
	}
	return "disks"
}
