// Package deletecmd is `cowork delete`.
package deletecmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/stop"
	"github.com/coworkhq/cowork/hostd/instance"
)

// Options is a parsed `cowork delete` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string
	// Yes skips the question; Force skips it too, and cuts the power.
	Yes, Force bool
	// KeepClusterObjects removes a kubevirt instance from this machine
	// alone, asking its cluster nothing.
	KeepClusterObjects bool
}

// NewCmdDelete builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdDelete(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete the sandbox VM",
		Long: `Stop the instance and remove it: its disk, settings and logs. The workspace
folder on the host is kept. Asks first on a terminal; --yes skips the question,
--force also cuts the power instead of shutting down.

An instance whose guest runs on a cluster (init --backend kubevirt) has its
VM, disk and seed deleted there first, by cowork-hostd-kubevirt; when that
fails (the cluster cannot be reached, say), nothing is removed here, and the
delete can be run again. --keep-cluster-objects removes such an instance from
this machine alone, asking its cluster nothing, and prints the kubectl
command that deletes what it may have left there.`,
		Example: "  cowork delete\n  cowork delete --yes\n  cowork delete --name scratch --force\n  cowork delete --name remote --keep-cluster-objects",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVarP(&o.Force, "force", "f", false, "do not ask, and cut the power instead of shutting down")
	cmd.Flags().BoolVar(&o.KeepClusterObjects, "keep-cluster-objects", false, "with an instance on a cluster (init --backend kubevirt): remove it from this machine only, leaving its VM, disk and seed in the cluster")
	return cmd
}

func run(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if o.KeepClusterObjects && !inst.Config.Remote() {
		return cmdutil.FlagErrorf("--keep-cluster-objects is for an instance on a cluster; %s runs on this machine: `cowork delete%s` deletes it", o.Name, instance.NameFlag(o.Name))
	}
	if err := inst.CanDelete(); err != nil {
		return err // asked nothing, changed nothing
	}
	if !o.Yes && !o.Force {
		q := fmt.Sprintf("Delete instance %s and its disk (%s)? The workspace %s is kept.", o.Name, inst.Paths.Dir(), inst.Config.Workspace)
		if k := inst.Config.Cluster; inst.Config.Remote() && k != nil {
			q = fmt.Sprintf("Delete instance %s: its VM and disk in namespace %s of its cluster (its /workspace is on that disk, and goes with it), and its folder %s?", o.Name, k.Namespace, inst.Paths.Dir())
			if o.KeepClusterObjects {
				q = fmt.Sprintf("Remove instance %s from this machine (its folder %s), leaving whatever it has in namespace %s of its cluster?", o.Name, inst.Paths.Dir(), k.Namespace)
			}
		}
		yes, err := cmdutil.Confirm(o.IO, "cowork delete", q, "--yes")
		if err != nil {
			return err
		}
		if !yes {
			fmt.Fprintln(o.IO.ErrOut, "not deleted")
			return &cmdutil.ExitError{Code: 1}
		}
	}
	if inst.Running() {
		fmt.Fprintf(o.IO.ErrOut, "Stopping %s...\n", o.Name)
	}
	began := time.Now()
	if o.KeepClusterObjects {
		r, err := inst.DeleteHere(ctx, o.Force)
		if err != nil {
			return err
		}
		stop.Report(o.IO, o.Name, r, began)
		fmt.Fprintf(o.IO.ErrOut, "removed %s from this machine; its cluster was not asked: what it may still hold of it goes with\n  %s\n", o.Name, cowork.ClusterCleanup(inst.Config))
		return nil
	}
	r, err := inst.Delete(ctx, o.Force)
	if err != nil {
		return err
	}
	stop.Report(o.IO, o.Name, r, began)
	fmt.Fprintf(o.IO.ErrOut, "deleted %s\n", o.Name)
	return nil
}
