// Package stop is `cowork stop`.
package stop

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
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
	if _, err := instance.Load(name); err != nil {
		return err
	}
	paths, err := instance.PathsFor(name)
	if err != nil {
		return err
	}
	c, err := cowork.Dial(name)
	if errors.Is(err, cowork.ErrNotRunning) {
		if stale, _ := instance.CleanStale(paths); stale != nil && stale.Pid != 0 {
			fmt.Fprintf(ios.ErrOut, "cleaned up after hostd (pid %d), which had died\n", stale.Pid)
		}
		fmt.Fprintf(ios.ErrOut, "%s is not running\n", name)
		return nil
	}
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(ios.ErrOut, "Stopping %s...\n", name)
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	// hostd may exit before it answers; what counts is that it is gone.
	stopErr := c.Stop(ctx, force, timeout)
	if err := cowork.WaitStopped(ctx, paths); err != nil {
		return fmt.Errorf("%s did not stop (%v): %w%s", name, stopErr, err, cowork.Diagnostics(paths))
	}
	fmt.Fprintf(ios.ErrOut, "%s stopped (%s)\n", name, time.Since(began).Round(100*time.Millisecond))
	return nil
}
