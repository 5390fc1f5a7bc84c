// Package diskcmd is `cowork disk`: the instance's disk.
package diskcmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/internal/units"
)

// NewCmdDisk builds the command; name is the global --name.
func NewCmdDisk(ios *iostreams.IOStreams, name *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disk",
		Short: "Manage the sandbox's disk",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "resize SIZE",
		Short: "Grow the disk of a stopped instance",
		Long: `Grow the instance's disk to SIZE. The instance must be stopped; the guest
grows its partition and file system at its next boot. A disk never shrinks.`,
		Example: "  cowork disk resize 20GiB",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.FlagErrorf("cowork disk resize takes one SIZE, e.g. 20GiB")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := units.ParseSize(args[0])
			if err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			cfg, err := instance.Load(*name)
			if err != nil {
				return err
			}
			paths, err := instance.PathsFor(*name)
			if err != nil {
				return err
			}
			if instance.Held(paths) {
				return fmt.Errorf("%s is running; stop it first with `cowork stop%s`", *name, instance.NameFlag(*name))
			}
			if err := image.Resize(paths.Disk(), int64(size)); err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			cfg.Disk = size
			if err := cfg.Save(paths.Dir()); err != nil {
				return err
			}
			fmt.Fprintf(ios.ErrOut, "%s's disk is %s; the guest grows into it at its next start\n", *name, size)
			return nil
		},
	})
	return cmd
}
