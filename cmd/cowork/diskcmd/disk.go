// Package diskcmd is `cowork disk`: the instance's disk.
package diskcmd

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/units"
)

// ResizeOptions is a parsed `cowork disk resize` command line.
type ResizeOptions struct {
	IO   *iostreams.IOStreams
	Name string
	Size string
	Yes  bool // grow without asking
}

// NewCmdDisk builds the command; name is the global --name. runF, when not
// nil, gets the resize options instead of running them (tests).
func NewCmdDisk(ios *iostreams.IOStreams, name *string, runF func(*ResizeOptions) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disk",
		Short: "Manage the sandbox's disk",
		Args:  cmdutil.UnknownCommand,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	o := &ResizeOptions{IO: ios}
	resize := &cobra.Command{
		Use:   "resize SIZE",
		Short: "Grow the disk of a stopped instance",
		Long: `Grow the instance's disk to SIZE. The instance must be stopped; the guest
grows its partition and file system at its next boot. A disk never shrinks,
so a disk grown cannot be made small again: resize asks first on a terminal;
--yes skips the question.`,
		Example: "  cowork disk resize 20GiB\n  cowork disk resize --yes 20GiB",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.FlagErrorf("cowork disk resize takes one SIZE, e.g. 20GiB")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Size = *name, args[0]
			if runF != nil {
				return runF(o)
			}
			return runResize(o)
		},
	}
	resize.Flags().BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	cmd.AddCommand(resize)
	return cmd
}

// runResize grows the disk file, then saves the size in the config. What
// is on the disk stays where it is: the file only gets longer.
func runResize(o *ResizeOptions) error {
	size, err := units.ParseSize(o.Size)
	if err != nil {
		return &cmdutil.FlagError{Err: err}
	}
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	current, err := inst.CanResize(size)
	var shrink *cowork.ShrinkError
	switch {
	case errors.As(err, &shrink):
		return &cmdutil.FlagError{Err: err}
	case err != nil:
		return err
	case size == current:
		fmt.Fprintf(o.IO.ErrOut, "%s's disk is %s already\n", o.Name, current)
		return nil
	}
	if !o.Yes {
		q := fmt.Sprintf("Grow %s's disk from %s to %s? It can never shrink back.", o.Name, current, size)
		yes, err := cmdutil.Confirm(o.IO, "cowork disk resize", q, "--yes")
		if err != nil {
			return err
		}
		if !yes {
			fmt.Fprintln(o.IO.ErrOut, "not resized")
			return &cmdutil.ExitError{Code: 1}
		}
	}
	if _, err := inst.Resize(size); err != nil {
		return err
	}
	fmt.Fprintf(o.IO.ErrOut, "%s's disk is %s; the guest grows into it at its next start\n", o.Name, size)
	return nil
}
