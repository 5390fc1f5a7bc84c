// Package start is `cowork start`.
package start

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/boot"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork start` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Name    string
	Timeout time.Duration // how long to wait for the guest to be ready
	Cold    bool          // discard a saved guest (cowork suspend) and boot from the disk
}

// NewCmdStart builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdStart(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the sandbox VM",
		Long: `Boot the instance and wait until its agent is ready, showing each phase.
A running instance is left as it is, whatever --timeout says. When the guest
is not ready within --timeout, or on Ctrl-C, the VM this start booted is
stopped.

An instance that ` + "`cowork suspend`" + ` saved is resumed where it was, unless --cold
discards the saved state first; a state that no longer fits this host or the
instance's settings is set aside, and the guest boots cold, saying why.`,
		Example: "  cowork start\n  cowork start --name scratch --timeout 20m\n  cowork start --cold",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if o.Timeout <= 0 {
				return cmdutil.FlagErrorf("--timeout %s: a guest needs some time to boot, e.g. --timeout 10m", o.Timeout)
			}
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long to wait for the guest to be ready")
	cmd.Flags().BoolVar(&o.Cold, "cold", false, "discard the saved guest (cowork suspend) and boot from the disk")
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	if o.Cold {
		inst, err := cowork.Open(o.Name)
		if err != nil {
			return err
		}
		if inst.Running() {
			fmt.Fprintf(o.IO.ErrOut, "note: %s is running; --cold applies to a stopped instance (`cowork stop%s` first)\n", o.Name, instance.NameFlag(o.Name))
		} else {
			discarded, err := inst.DiscardSaved()
			if err != nil {
				return err
			}
			if discarded {
				fmt.Fprintf(o.IO.ErrOut, "discarded the saved state of %s; it boots from its disk\n", o.Name)
			}
		}
	}
	return boot.Start(ctx, o.IO, o.Name, o.Timeout)
}
