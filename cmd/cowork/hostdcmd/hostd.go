// Package hostdcmd is the hidden `cowork hostd`: the daemon that `start`
// launches for an instance.
package hostdcmd

import (
	"context"
	"errors"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/daemon"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork hostd` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string
}

// NewCmdHostd builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdHostd(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	return &cobra.Command{
		Use:    "hostd",
		Short:  "Run an instance's daemon (started by `cowork start`)",
		Hidden: true,
		Args:   cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return run(o)
		},
	}
}

func run(o *Options) error {
	// Signals are caught before anything else: one arriving at any point
	// (an interrupted `cowork start` sends SIGTERM) stops the VM and
	// cleans up rather than killing hostd, which would leave its pid file
	// and sockets behind.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	log, _ := daemon.OpenLog(o.Name, o.IO.ErrOut)
	err := daemon.Run(ctx, daemon.Options{Name: o.Name, Log: log, NewMachine: daemon.PlatformMachine})
	if errors.Is(err, instance.ErrRunning) {
		return &cmdutil.ExitError{Code: hostd.ExitAlreadyRunning, Msg: "instance " + o.Name + " already has a hostd"}
	}
	return err
}
