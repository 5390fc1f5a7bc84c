// Package start is `cowork start`.
package start

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// Mounts, when set (or NoMounts), replace the instance's mounts
	// besides the workspace, for this start and the later ones.
	Mounts   []instance.Mount
	NoMounts bool
	// SSHAgent, when set, lends the guest the host's SSH agent (true) or
	// stops lending it (false), for this start and the later ones.
	SSHAgent *bool
}

// NewCmdStart builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdStart(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	var mounts []string
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the sandbox VM",
		Long: `Boot the instance and wait until its agent is ready, showing each phase.
A running instance is left as it is, whatever --timeout says. When the guest
is not ready within --timeout, or on Ctrl-C, the VM this start booted is
stopped.

An instance that ` + "`cowork suspend`" + ` saved is resumed where it was, unless --cold
discards the saved state first; a state that no longer fits this host or the
instance's settings is set aside, and the guest boots cold, saying why.

--mount HOST[:GUEST][:ro] (repeatable) replaces the folders the instance
shares besides the workspace, for this start and the later ones (as
cowork init --mount sets them); --no-mounts drops them. Neither applies to
a running instance; a suspended one needs --cold with them (its saved guest
was saved with the mounts it had).

--ssh-agent lends the guest this machine's SSH agent (SSH_AUTH_SOCK) from
this start on, --no-ssh-agent stops: its keys stay here, the guest's ssh
asks for signatures, each audited (cowork proxy).`,
		Example: "  cowork start\n  cowork start --name scratch --timeout 20m\n  cowork start --cold\n  cowork start --mount ~/datasets:/data:ro",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if o.Timeout <= 0 {
				return cmdutil.FlagErrorf("--timeout %s: a guest needs some time to boot, e.g. --timeout 10m", o.Timeout)
			}
			if o.NoMounts && len(mounts) > 0 {
				return cmdutil.FlagErrorf("--no-mounts and --mount contradict each other: give one")
			}
			for _, s := range mounts {
				m, err := instance.ParseMount(s)
				if err != nil {
					return cmdutil.FlagErrorf("%v", err)
				}
				o.Mounts = append(o.Mounts, m)
			}
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long to wait for the guest to be ready")
	cmd.Flags().BoolVar(&o.Cold, "cold", false, "discard the saved guest (cowork suspend) and boot from the disk")
	cmd.Flags().StringArrayVar(&mounts, "mount", nil, "share a host folder besides the workspace, HOST[:GUEST][:ro], replacing the instance's mounts; repeatable")
	cmd.Flags().BoolVar(&o.NoMounts, "no-mounts", false, "drop the instance's mounts besides the workspace")
	var lend, noLend bool
	cmd.Flags().BoolVar(&lend, "ssh-agent", false, "lend the guest this machine's SSH agent, from this start on")
	cmd.Flags().BoolVar(&noLend, "no-ssh-agent", false, "stop lending the guest this machine's SSH agent")
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		switch {
		case lend && noLend:
			return cmdutil.FlagErrorf("--ssh-agent and --no-ssh-agent contradict each other: give one")
		case lend || noLend:
			o.SSHAgent = &lend
		}
		return nil
	}
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	if o.SSHAgent != nil && *o.SSHAgent {
		inst, err := cowork.Open(o.Name)
		if err != nil {
			return err
		}
		if err := inst.LocalOnly(cowork.OpSSHAgent); err != nil {
			return err // before the mounts change
		}
	}
	if err := setMounts(o); err != nil {
		return err
	}
	if o.SSHAgent != nil {
		inst, err := cowork.Open(o.Name)
		if err != nil {
			return err
		}
		discarded, err := inst.SetSSHAgent(*o.SSHAgent, o.Cold)
		if err != nil {
			return err
		}
		if discarded {
			fmt.Fprintf(o.IO.ErrOut, "discarded the saved state of %s; it boots from its disk\n", o.Name)
		}
	}
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

// setMounts replaces the instance's mounts when o says to, first
// discarding a saved guest when --cold allows it: the saved guest would
// not fit the new devices. Bad mounts are usage errors; nothing changes.
func setMounts(o *Options) error {
	if len(o.Mounts) == 0 && !o.NoMounts {
		return nil
	}
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if slices.Equal(inst.Config.Mounts, o.Mounts) {
		return nil // as they are: nothing to change, running or not
	}
	// SetMounts checks the mounts before anything changes (the saved
	// state --cold discards included), and refuses a running instance.
	discarded, err := inst.SetMounts(o.Mounts, o.Cold)
	var invalid *cowork.InvalidMountError
	if errors.As(err, &invalid) {
		return &cmdutil.FlagError{Err: err}
	}
	if err != nil {
		return err
	}
	if discarded {
		fmt.Fprintf(o.IO.ErrOut, "discarded the saved state of %s; it boots from its disk\n", o.Name)
	}
	for _, m := range o.Mounts {
		fmt.Fprintf(o.IO.ErrOut, "mounts %s at %s (%s)\n", m.Host, m.Guest, m.Mode())
	}
	if o.NoMounts {
		fmt.Fprintf(o.IO.ErrOut, "dropped the mounts of %s besides the workspace\n", o.Name)
	}
	return nil
}
