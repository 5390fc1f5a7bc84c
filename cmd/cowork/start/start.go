// Package start is `cowork start`.
package start

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/boot"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// NewCmdStart builds the command; name is the global --name.
func NewCmdStart(ios *iostreams.IOStreams, name *string) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the sandbox VM",
		Long: `Boot the instance and wait until its agent is ready, showing each phase.
A running instance is left as it is. Ctrl-C stops the half-booted VM.`,
		Example: "  cowork start\n  cowork start --name scratch --timeout 20m",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return boot.Start(cmd.Context(), ios, *name, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the guest to be ready")
	return cmd
}
