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
	"github.com/coworkhq/cowork/cmd/cowork/suspend"
)

// Options is a parsed `cowork stop` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Name    string
	Force   bool          // cut the power at once
	Timeout time.Duration // how long the guest may take to power off
	Suspend bool          // save the guest with its memory instead (cowork suspend)
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
left as it is. With --suspend the guest is saved with its memory instead, as
` + "`cowork suspend`" + ` does, and the next ` + "`cowork start`" + ` resumes it.`,
		Example: "  cowork stop\n  cowork stop --force\n  cowork stop --suspend",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if o.Timeout <= 0 {
				return cmdutil.FlagErrorf("--timeout %s: the guest needs some time to shut down, e.g. --timeout 30s; --force cuts the power at once", o.Timeout)
			}
			if o.Suspend && (o.Force || cmd.Flags().Changed("timeout")) {
				return cmdutil.FlagErrorf("--suspend saves the guest, it does not shut it down: it takes neither --force nor --timeout (cowork suspend --force suspends while processes use /workspace)")
			}
			if runF != nil {
				return runF(o)
			}
			if o.Suspend {
				return suspend.Run(cmd.Context(), &suspend.Options{IO: o.IO, Name: o.Name})
			}
			return Stop(cmd.Context(), o.IO, o.Name, o.Force, o.Timeout)
		},
	}
	cmd.Flags().BoolVarP(&o.Force, "force", "f", false, "cut the power instead of shutting down")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 30*time.Second, "how long the guest may take to shut down")
	cmd.Flags().BoolVar(&o.Suspend, "suspend", false, "save the guest with its memory instead; the next start resumes it")
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
