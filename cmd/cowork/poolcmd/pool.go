// Package poolcmd is `cowork pool`: the throwaway clones an instance keeps
// ready for its next `exec --rm` and `ask --rm`.
package poolcmd

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork pool` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string // the instance (global --name)
	Op   string // fill, ls or drain

	Size       int
	SizeGiven  bool
	Hot, Warm  bool
	Snapshot   string
	Background bool // a run's refill: quiet when another filler runs
	JSON       bool
}

// NewCmdPool builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdPool(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	run := func(cmd *cobra.Command, op string) error {
		o.Name, o.Op = *name, op
		o.SizeGiven = cmd.Flags().Changed("size")
		if o.Hot && o.Warm {
			return cmdutil.FlagErrorf("--hot and --warm choose one kind of clone; give one")
		}
		if o.SizeGiven && (o.Size < 0 || o.Size > cowork.MaxPoolSize) {
			return cmdutil.FlagErrorf("--size %d: want 0 to %d", o.Size, cowork.MaxPoolSize)
		}
		if runF != nil {
			return runF(o)
		}
		return Run(cmd.Context(), o)
	}
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Keep throwaway clones ready for exec --rm and ask --rm",
		Long: `An instance's pool holds clones of its snapshot made ready for its next
throwaway runs (cowork exec --rm, cowork ask --rm), so that a run need not
boot one. Warm clones (the default) are suspended, and held loaded in a
paused VM: a run wakes one in a fraction of a second, and they cost their
saved memory on disk and in RAM, and no CPU (one whose hold ended resumes
from disk in under a second). Hot clones run: a run starts at once, and
they cost their memory and some CPU. Each run takes one, and starts the
making of the next in the background.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	fill := &cobra.Command{
		Use:   "fill",
		Short: "Set the pool's size and make its clones now",
		Example: `  cowork pool fill
  cowork pool fill --size 2 --hot
  cowork --name box pool fill --snapshot clean`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return run(cmd, "fill") },
	}
	fill.Flags().IntVar(&o.Size, "size", 1, "how many clones to keep ready")
	fill.Flags().BoolVar(&o.Hot, "hot", false, "keep them running (costs their memory)")
	fill.Flags().BoolVar(&o.Warm, "warm", false, "keep them suspended (the default)")
	fill.Flags().StringVar(&o.Snapshot, "snapshot", "", "clone the snapshot `NAME` (default: the instance's latest)")
	fill.Flags().BoolVar(&o.Background, "background", false, "")
	_ = fill.Flags().MarkHidden("background")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "Show the pool's settings and clones",
		Args:    cmdutil.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd, "ls") },
	}
	ls.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	drain := &cobra.Command{
		Use:   "drain",
		Short: "Empty the pool: size 0, its free clones deleted",
		Args:  cmdutil.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return run(cmd, "drain") },
	}
	cmd.AddCommand(fill, ls, drain)
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if err := inst.LocalOnly(cowork.OpPool); err != nil {
		return err
	}
	switch o.Op {
	case "fill":
		return fill(ctx, o, inst)
	case "drain":
		if inst.PoolFilling() {
			fmt.Fprintf(o.IO.ErrOut, "waiting for the pool's filler to finish the clone it is making (a boot, and a suspend for a warm one)\n")
		}
		gone, err := inst.DrainPool(ctx)
		for _, n := range gone {
			fmt.Fprintf(o.IO.Out, "deleted %s\n", n)
		}
		return err
	}
	return list(o, inst)
}

func fill(ctx context.Context, o *Options, inst *cowork.Instance) error {
	s, err := inst.PoolSettings()
	if err != nil {
		return err
	}
	if !o.Background {
		if o.SizeGiven || s.Size == 0 {
			s.Size = o.Size
		}
		if o.Hot || o.Warm {
			s.Hot = o.Hot
		}
		if o.Snapshot != "" {
			s.Snapshot = o.Snapshot
		}
		if err := inst.SetPoolSettings(s); err != nil {
			return &cmdutil.FlagError{Err: err}
		}
	}
	began := time.Now()
	fmt.Fprintf(o.IO.ErrOut, "filling the pool of %s: %d %s clone(s)\n", inst.Name, s.Size, s.Kind())
	made, err := inst.FillPool(ctx, nil)
	for _, n := range made {
		fmt.Fprintf(o.IO.Out, "made %s\n", n)
	}
	if errors.Is(err, cowork.ErrPoolBusy) {
		if o.Background {
			return nil // that one fills it
		}
		return fmt.Errorf("%w of %s; `cowork pool ls%s` shows it", err, inst.Name, instance.NameFlag(inst.Name))
	}
	if err == nil {
		fmt.Fprintf(o.IO.ErrOut, "the pool of %s is full (%d made in %s)\n", inst.Name, len(made), time.Since(began).Round(100*time.Millisecond))
	}
	return err
}

// Listing is `pool ls --json`.
type Listing struct {
	cowork.PoolSettings
	Clones []cowork.PoolClone `json:"clones"`
}

func list(o *Options, inst *cowork.Instance) error {
	s, err := inst.PoolSettings()
	if err != nil {
		return err
	}
	clones, err := inst.PoolClones()
	if err != nil {
		return err
	}
	if o.JSON {
		if clones == nil {
			clones = []cowork.PoolClone{}
		}
		return cmdutil.PrintJSON(o.IO.Out, Listing{PoolSettings: s, Clones: clones})
	}
	snap := s.Snapshot
	if snap == "" {
		snap = "the latest"
	}
	fmt.Fprintf(o.IO.ErrOut, "pool of %s: size %d, %s clones of %s snapshot\n", inst.Name, s.Size, s.Kind(), snap)
	if len(clones) == 0 {
		return nil
	}
	w := tabwriter.NewWriter(o.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSNAPSHOT\tSTATE\tCREATED")
	for _, c := range clones {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, c.Snapshot, c.State, c.Created.Local().Format(time.DateTime))
	}
	return w.Flush()
}
