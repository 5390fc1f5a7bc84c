// Package hostdcmd is the hidden `cowork hostd`: the daemon that `start`
// launches for an instance.
package hostdcmd

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/daemon"
	"github.com/coworkhq/cowork/hostd/instance"
)

// NewCmdHostd builds the command; name is the global --name.
func NewCmdHostd(ios *iostreams.IOStreams, name *string) *cobra.Command {
	return &cobra.Command{
		Use:    "hostd",
		Short:  "Run an instance's daemon (started by `cowork start`)",
		Hidden: true,
		Args:   cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, _ := daemon.OpenLog(*name, ios.ErrOut)
			err := daemon.Run(*name, log)
			if errors.Is(err, instance.ErrRunning) {
				return &cmdutil.ExitError{Code: hostd.ExitAlreadyRunning, Msg: "instance " + *name + " already has a hostd"}
			}
			return err
		},
	}
}
