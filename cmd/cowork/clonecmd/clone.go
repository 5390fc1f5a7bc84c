// Package clonecmd is `cowork clone`: a new instance from a stopped one.
package clonecmd

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/boot"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork clone` command line.
type Options struct {
	IO        *iostreams.IOStreams
	Src, Dst  string
	Workspace string
	Start     bool
	Timeout   time.Duration
	Snapshot  string // clone this snapshot of SRC, not its disk
}

// NewCmdClone builds the command. runF, when not nil, gets the options
// instead of running them (tests).
func NewCmdClone(ios *iostreams.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "clone SRC DST",
		Short: "Make a new instance from a stopped one",
		Long: `Make the instance DST from the stopped instance SRC: a copy of its disk (a
reflink on file systems that have them; on ext4 a sparse copy, and an
instance on a golden disk stays an overlay on it), its settings and its
network policy. DST gets its own MAC address and cloud-init instance: at its
first boot the guest makes itself a new machine-id and ssh host keys.
Published ports are not copied (a host port is one instance's); the
workspace folder is SRC's unless --workspace names another. With --snapshot
the clone is made from one of SRC's snapshots instead, in about a second
whatever the disk's size (its layers are shared, read-only, or copied for
what they hold above the one below), and SRC may be running. A snapshot
with memory makes a fork: the clone's first start resumes the guest where
the snapshot left it (its processes, page cache and tmpfs), then reseeds its
random numbers from the host and takes a machine-id of its own.`,
		Example: "  cowork clone sandbox scratch\n  cowork clone sandbox scratch --workspace ~/scratch --start\n  cowork clone sandbox try-it --snapshot before-upgrade",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cmdutil.FlagErrorf("cowork clone takes SRC and DST, the instances to copy from and to make")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Src, o.Dst = args[0], args[1]
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.Workspace, "workspace", "", "host folder shared at /workspace (default: SRC's)")
	cmd.Flags().BoolVar(&o.Start, "start", false, "start DST once made")
	cmd.Flags().StringVar(&o.Snapshot, "snapshot", "", "clone SRC's snapshot `NAME` (SRC may run), not its disk")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "with --start, how long to wait for DST to be ready")
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	if err := instance.ValidateName(o.Dst); err != nil {
		return &cmdutil.FlagError{Err: err}
	}
	ws := ""
	if o.Workspace != "" {
		abs, err := filepath.Abs(instance.ExpandHome(o.Workspace))
		if err != nil {
			return &cmdutil.FlagError{Err: err}
		}
		ws = abs
	}
	src, err := cowork.Open(o.Src)
	if err != nil {
		return err
	}
	began := time.Now()
	from := o.Src
	var dst *cowork.Instance
	if o.Snapshot != "" {
		dst, err = src.CloneSnapshot(o.Snapshot, o.Dst, ws)
		from = fmt.Sprintf("%s's snapshot %s", o.Src, o.Snapshot)
	} else {
		dst, err = src.Clone(o.Dst, ws)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(o.IO.ErrOut, "%s cloned from %s in %s (workspace %s)\n", o.Dst, from, time.Since(began).Round(time.Millisecond), dst.Config.Workspace)
	if len(src.Config.Publish) > 0 {
		fmt.Fprintf(o.IO.ErrOut, "note: %s's published ports were not copied to %s: a host port can be one instance's only\n", o.Src, o.Dst)
	}
	if !o.Start {
		fmt.Fprintf(o.IO.ErrOut, "start it with `cowork start%s`\n", instance.NameFlag(o.Dst))
		return nil
	}
	return boot.Start(ctx, o.IO, o.Dst, o.Timeout)
}
