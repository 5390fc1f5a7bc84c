// Package stop is `cowork stop`.
package stop

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// Options is a parsed `cowork stop` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Name    string
	Force   bool          // cut the power at once
	Timeout time.Duration // how long the guest may take to power off
}

// NewCmdStop builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdStop(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the sandbox VM",
		Long: `Shut the guest down cleanly (it syncs its disks and powers off); after
--timeout, or at once with --force, its power is cut. A stopped instance is
left as it is.`,
		Example: "  cowork stop\n  cowork stop --force",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if o.Timeout <= 0 {
				return cmdutil.FlagErrorf("--timeout %s: the guest needs some time to shut down, e.g. --timeout 30s; --force cuts the power at once", o.Timeout)
			}
			if runF != nil {
				return runF(o)
			}
			return Stop(cmd.Context(), o.IO, o.Name, o.Force, o.Timeout)
		},
	}
	cmd.Flags().BoolVarP(&o.Force, "force", "f", false, "cut the power instead of shutting down")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 30*time.Second, "how long the guest may take to shut down")
	return cmd
}

// Stop stops the named instance if it runs and waits until hostd is gone.
func Stop(ctx context.Context, ios *iostreams.IOStreams, name string, force bool, timeout time.Duration) error {
	inst, err := cowork.Open(name)
	if err != nil {
		return err
	}
	if inst.Running() {
		fmt.Fprintf(ios.ErrOut, "Stopping %s...\n", name)
	}
	began := time.Now()
	r, err := inst.Stop(ctx, force, timeout)
	if err != nil {
		return err
	}
	Report(ios, name, r, began)
	return nil
}

// Report says what a stop that began at began did.
func Report(ios *iostreams.IOStreams, name string, r cowork.StopResult, began time.Time) {
	if r.DeadPid != 0 {
		fmt.Fprintf(ios.ErrOut, "cleaned up after hostd (pid %d), which had died\n", r.DeadPid)
	}
	if !r.WasRunning {
		fmt.Fprintf(ios.ErrOut, "%s is not running\n", name)
		return
	}
	fmt.Fprintf(ios.ErrOut, "%s stopped (%s)\n", name, time.Since(began).Round(100*time.Millisecond))
}
