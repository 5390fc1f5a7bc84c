// Package suspend is `cowork suspend`: save the running guest with its
// memory, so that `cowork start` resumes it where it was.
package suspend

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/units"
)

// Options is a parsed `cowork suspend` command line.
type Options struct {
	IO    *iostreams.IOStreams
	Name  string
	Force bool // suspend even when guest processes use /workspace
	JSON  bool
}

// Result is what `cowork suspend --json` prints.
type Result struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	TookMS int64  `json:"took_ms"`
}

// NewCmdSuspend builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdSuspend(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "suspend",
		Short: "Save the running sandbox with its memory and stop it",
		Long: `Save the running guest, its memory and devices, into the instance's folder
and stop its VM; ` + "`cowork start`" + ` resumes it where it was: background processes,
tmpfs, page cache, the same boot. ` + "`cowork start --cold`" + ` boots it from its disk
instead, discarding the saved state.

Under QEMU the share cannot stay attached across a save: the guest unmounts
/workspace first, and mounts it again on resume. A suspend is refused while
guest processes use /workspace (a shell in it, a running command), naming
them; --force unmounts it under them. Commands attached to the terminal
(cowork exec, shell, claude) end with the suspend.

A state that no longer fits (QEMU or cowork upgraded, other --cpus or
--memory, a host that restarted since) is not resumed: the start says why
and boots the guest cold from its disk.`,
		Example: "  cowork suspend\n  cowork start        # resumes it\n  cowork suspend --force",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.Force, "force", "f", false, "suspend even when guest processes use /workspace (it is unmounted under them)")
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print the result as JSON")
	return cmd
}

// Run carries out o.
func Run(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	if err := inst.LocalOnly(cowork.OpSuspend); err != nil {
		return err
	}
	if !inst.Running() {
		return cowork.NotRunningError(o.Name)
	}
	fmt.Fprintf(o.IO.ErrOut, "Suspending %s...\n", o.Name)
	began := time.Now()
	sus, err := inst.Suspend(ctx, o.Force)
	if err != nil {
		return err
	}
	if o.JSON {
		b, _ := json.MarshalIndent(Result{Name: o.Name, Bytes: sus.Bytes, TookMS: sus.TookMS}, "", "  ")
		fmt.Fprintln(o.IO.Out, string(b))
	}
	fmt.Fprintf(o.IO.ErrOut, "%s suspended: %s saved (%s); `cowork start` resumes it\n",
		o.Name, units.Size(sus.Bytes), time.Since(began).Round(100*time.Millisecond))
	return nil
}
