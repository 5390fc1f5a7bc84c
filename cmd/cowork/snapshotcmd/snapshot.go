// Package snapshotcmd is `cowork snapshot`: snapshots of an instance's
// disk (and of its memory, when it runs or is suspended), taken, listed,
// restored and removed.
package snapshotcmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/boot"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/snapshot"
	"github.com/coworkhq/cowork/units"
)

// Options is a parsed `cowork snapshot` command line.
type Options struct {
	IO    *iostreams.IOStreams
	Name  string // the instance (global --name)
	Op    string // create, ls, restore or rm
	Snaps []string
	JSON  bool
	Force bool // restore over changes
}

// NewCmdSnapshot builds the command; name is the global --name. runF,
// when not nil, gets the options instead of running them (tests).
func NewCmdSnapshot(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	run := func(ctx context.Context, op string, args []string) error {
		o.Name, o.Op, o.Snaps = *name, op, args
		if runF != nil {
			return runF(o)
		}
		return Run(ctx, o)
	}
	one := func(use string) cobra.PositionalArgs {
		return func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.FlagErrorf("cowork snapshot %s takes one NAME", use)
			}
			return nil
		}
	}
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take, list, restore and remove disk snapshots",
		Long: `A snapshot freezes the disk of a stopped instance, at once whatever its size:
the disk becomes a read-only layer in the instance's folder, and the instance
goes on from a thin overlay on it. A snapshot of a suspended instance keeps
its memory too; create on a running instance suspends it, takes the snapshot
with its memory, and resumes it. restore puts the disk back to a snapshot;
what was written since is dropped (it asks for --force when there is any),
and a snapshot with memory is resumed by the next start, where it was. A
snapshot that the disk or a later snapshot sits on cannot be removed.`,
		Args: cmdutil.UnknownCommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Snapshot the disk (and the memory of a running or suspended guest)",
		Example: "  cowork snapshot create before-upgrade\n  cowork snapshot create --name box clean",
		Args:    one("create"),
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), "create", args) },
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the instance's snapshots",
		Example: "  cowork snapshot ls\n  cowork snapshot ls --json",
		Args:    cmdutil.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), "ls", args) },
	}
	ls.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	restore := &cobra.Command{
		Use:     "restore NAME",
		Short:   "Put the disk of a stopped instance back to a snapshot",
		Example: "  cowork snapshot restore before-upgrade\n  cowork snapshot restore --force before-upgrade",
		Args:    one("restore"),
		RunE:    func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), "restore", args) },
	}
	restore.Flags().BoolVarP(&o.Force, "force", "f", false, "drop what the disk holds since its snapshot")
	rm := &cobra.Command{
		Use:     "rm NAME...",
		Short:   "Remove snapshots nothing sits on",
		Example: "  cowork snapshot rm before-upgrade",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.FlagErrorf("cowork snapshot rm takes one or more NAMEs from `cowork snapshot ls`")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), "rm", args) },
	}
	cmd.AddCommand(create, ls, restore, rm)
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	for _, n := range o.Snaps {
		if err := snapshot.ValidName(n); err != nil {
			return &cmdutil.FlagError{Err: err}
		}
	}
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if o.Op == "create" || o.Op == "restore" {
		if err := inst.LocalOnly(cowork.OpSnapshot); err != nil {
			return err // before a running guest is suspended for it
		}
	}
	switch o.Op {
	case "create":
		return create(ctx, o, inst)
	case "ls":
		all, err := inst.Snapshots()
		if err != nil {
			return err
		}
		if o.JSON {
			enc := json.NewEncoder(o.IO.Out)
			enc.SetIndent("", "  ")
			return enc.Encode(all)
		}
		w := tabwriter.NewWriter(o.IO.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tCREATED\tSIZE\tON DISK\tMEMORY\tPARENT\tCURRENT")
		for _, s := range all {
			cur, mem := "", "-"
			if s.Current {
				cur = "*"
			}
			if s.Memory {
				mem = "yes"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Created.Local().Format("2006-01-02 15:04"),
				units.Size(s.Size), units.Size(s.Allocated), mem, or(s.Parent, "-"), cur)
		}
		return w.Flush()
	case "restore":
		s, err := inst.RestoreSnapshot(o.Snaps[0], o.Force)
		if err != nil {
			return err
		}
		if s.Memory {
			fmt.Fprintf(o.IO.ErrOut, "%s is back at snapshot %s, disk and memory; `cowork start%s` resumes it there\n", o.Name, s.Name, instance.NameFlag(o.Name))
			return nil
		}
		fmt.Fprintf(o.IO.ErrOut, "%s's disk is back at snapshot %s; start it with `cowork start%s`\n", o.Name, s.Name, instance.NameFlag(o.Name))
		return nil
	case "rm":
		var errs []string
		for _, n := range o.Snaps {
			s, err := inst.RemoveSnapshot(n)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			fmt.Fprintf(o.IO.Out, "removed snapshot %s (%s freed)\n", n, units.Size(s.Allocated))
		}
		if len(errs) > 0 {
			return errors.New(strings.Join(errs, "\n"))
		}
		return nil
	}
	return cmdutil.FlagErrorf("cowork snapshot: no command %q", o.Op)
}

// create takes the snapshot; a running instance is suspended first and
// resumed after, so the snapshot holds its memory.
func create(ctx context.Context, o *Options, inst *cowork.Instance) error {
	began := time.Now()
	if err := snapshot.Supported(); err != nil {
		return err // before a suspend that would be for nothing
	}
	running := inst.Running()
	var published []cowork.Port // by `port publish`: a new hostd publishes only the config's
	auto := false               // following the guest's listening ports (port publish --auto)
	if running {
		if ports, err := inst.Ports(ctx); err == nil {
			for _, p := range ports {
				if !p.Config && !p.Auto { // the follower publishes those again
					published = append(published, p)
				}
			}
		}
		if st, err := inst.Status(ctx); err == nil {
			auto = st.AutoPublish
		}
		fmt.Fprintf(o.IO.ErrOut, "Suspending %s for the snapshot...\n", o.Name)
		if _, err := inst.Suspend(ctx, false); err != nil {
			return err
		}
	}
	s, err := inst.Snapshot(o.Snaps[0])
	if err != nil {
		if running {
			err = fmt.Errorf("%w; %s is suspended: `cowork start%s` resumes it", err, o.Name, instance.NameFlag(o.Name))
		}
		return err
	}
	what := "disk"
	if s.Memory {
		what = "disk and memory"
	}
	fmt.Fprintf(o.IO.ErrOut, "snapshot %s of %s taken in %s (%s; a %s disk)\n", s.Name, o.Name, time.Since(began).Round(time.Millisecond), what, units.Size(s.Size))
	if !running {
		return nil
	}
	if err := boot.Start(ctx, o.IO, o.Name, 10*time.Minute); err != nil {
		return err
	}
	for _, p := range published {
		if _, err := inst.PublishPort(ctx, p); err != nil {
			fmt.Fprintf(o.IO.ErrOut, "cowork: warning: guest port %d is no longer published at %s: %v\n", p.GuestPort, p.HostAddr, err)
		}
	}
	if auto {
		if err := inst.AutoPublish(ctx, true); err != nil {
			fmt.Fprintf(o.IO.ErrOut, "cowork: warning: the guest's listening ports are no longer followed: %v\n", err)
		}
	}
	return nil
}

func or(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}
