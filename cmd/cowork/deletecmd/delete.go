// Package deletecmd is `cowork delete`.
package deletecmd

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/stop"
	"github.com/coworkhq/cowork/hostd/instance"
)

// NewCmdDelete builds the command; name is the global --name.
func NewCmdDelete(ios *iostreams.IOStreams, name *string) *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete the sandbox VM",
		Long: `Stop the instance and remove it: its disk, settings and logs. The workspace
folder on the host is kept. Asks first on a terminal; --yes skips the question,
--force also cuts the power instead of shutting down.`,
		Example: "  cowork delete\n  cowork delete --yes\n  cowork delete --name scratch --force",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := instance.Load(*name)
			if err != nil {
				return err
			}
			paths, err := instance.PathsFor(*name)
			if err != nil {
				return err
			}
			if !yes && !force {
				if !ios.IsStdinTTY() {
					return cmdutil.FlagErrorf("cowork delete asks for confirmation; pass --yes when stdin is not a terminal")
				}
				fmt.Fprintf(ios.ErrOut, "Delete instance %s and its disk (%s)? The workspace %s is kept. [y/N] ", *name, paths.Dir(), cfg.Workspace)
				answer, _ := bufio.NewReader(ios.In).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					fmt.Fprintln(ios.ErrOut, "not deleted")
					return &cmdutil.ExitError{Code: 1}
				}
			}
			if err := stop.Stop(cmd.Context(), ios, *name, force, 30*time.Second); err != nil {
				return err
			}
			if err := os.RemoveAll(paths.Dir()); err != nil {
				return fmt.Errorf("remove %s: %w", paths.Dir(), err)
			}
			fmt.Fprintf(ios.ErrOut, "deleted %s\n", *name)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask, and cut the power instead of shutting down")
	return cmd
}
