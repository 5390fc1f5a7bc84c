// Package listcmd is `cowork ls`: every instance on this machine, a line
// each, as `limactl list` and `docker ps -a` show theirs. Clones, forks,
// throwaway runs' clones and instances on a cluster all live in
// $COWORK_HOME; without this, `status` showed them one name at a time, and
// only to someone who knew the names.
package listcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/status"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/units"
)

// Options is one `cowork ls`.
type Options struct {
	IO    *iostreams.IOStreams
	JSON  bool
	Quiet bool
}

// NewCmdList builds the command. runF, when not nil, gets the options
// instead of running them (tests).
func NewCmdList(ios *iostreams.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List every instance on this machine, with its state",
		Long: `List every instance in $COWORK_HOME, a line each: its state (running, booting,
suspended, stopped), CPUs, memory, disk, where its guest runs, and what it is
a clone of when a throwaway run or a pool made it. --json prints what
` + "`cowork status --json`" + ` prints, for each; -q prints the names alone.`,
		Example: "  cowork ls\n  cowork ls -q\n  cowork ls --json | jq -r '.[] | select(.state == \"running\") | .name'",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.JSON && o.Quiet {
				return cmdutil.FlagErrorf("--json and -q/--quiet print different things; choose one")
			}
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print each instance's status as a JSON array")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "print the names alone, one a line")
	return cmd
}

func run(ctx context.Context, o *Options) error {
	names, err := cowork.List()
	if err != nil {
		return err
	}
	if o.Quiet {
		for _, n := range names {
			fmt.Fprintln(o.IO.Out, n)
		}
		return nil
	}
	rows, err := gather(ctx, names)
	if err != nil {
		return err
	}
	if o.JSON {
		out := make([]any, 0, len(rows)) // `[]`, not null, for none
		for _, r := range rows {
			if r.err != nil {
				out = append(out, status.ErrorJSON{Name: r.name, State: "unknown", Error: r.err.Error()})
			} else {
				out = append(out, r.st)
			}
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		_, err = o.IO.Out.Write(append(termsafe.JSON(b), '\n'))
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintln(o.IO.ErrOut, "cowork: no instances here; `cowork init` creates one")
		return nil
	}
	table(o.IO, rows)
	return nil
}

// parallel is how many instances are asked at once: each is a file read,
// or one round trip to its hostd (at most 5 s for one that hangs).
const parallel = 8

// row is one instance's status, or why it could not be read.
type row struct {
	name string
	st   *status.Status
	err  error
}

// gather is each instance's status, in names' order, as status.Look sees
// it: nothing is locked or cleaned, so a listing never stands in the way
// of a start. One deleted meanwhile is left out; ctx's end ends it.
func gather(ctx context.Context, names []string) ([]row, error) {
	rows := make([]row, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, err := status.Look(ctx, name)
			rows[i] = row{name: name, st: st, err: err}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(rows, func(r row) bool { return errors.As(r.err, new(*instance.NotFoundError)) }), nil
}

// noteMax is how much of a note the table shows: `cowork status` has
// the rest.
const noteMax = 80

// table prints rows for a person. What hostd, the guest or a config file
// says is printed through termsafe.
func table(ios *iostreams.IOStreams, rows []row) {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tCPUS\tMEMORY\tDISK\tWHERE\tNOTE")
	for _, r := range rows {
		if r.err != nil {
			fmt.Fprintf(w, "%s\tunknown\t-\t-\t-\t-\t%s\n", termsafe.Line(r.name), termsafe.Line(cut(firstLine(r.err.Error()))))
			continue
		}
		st := r.st
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", termsafe.Line(st.Name), termsafe.Line(state(st)), st.CPUs,
			units.Size(st.MemoryBytes), disk(st), termsafe.Line(where(st)), termsafe.Line(note(st)))
	}
	w.Flush()
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if line != "" {
			fmt.Fprintln(ios.Out, strings.TrimRight(line, " \n"))
		}
	}
}

// state is st's state in a word: a running guest whose agent has not
// answered yet is booting (`cowork status` says "running (booting)").
func state(st *status.Status) string {
	if st.State == "running" && !st.Ready {
		return "booting"
	}
	return st.State
}

// disk is what the disk holds of its size; a guest on a cluster keeps
// its disk there.
func disk(st *status.Status) string {
	if st.Cluster != nil && st.DiskUsedBytes == 0 {
		return units.Size(st.DiskBytes).String() + " (in the cluster)"
	}
	return units.Size(st.DiskUsedBytes).String() + " of " + units.Size(st.DiskBytes).String()
}

// where is where st's guest runs: this machine, under the hypervisor
// that runs it when it runs, or a cluster's namespace.
func where(st *status.Status) string {
	switch {
	case st.Cluster != nil:
		return st.Cluster.Backend + ", namespace " + st.Cluster.Namespace
	case st.Backend != "" && st.Accelerator != "":
		return "here (" + st.Backend + ", " + st.Accelerator + ")"
	case st.Backend != "":
		return "here (" + st.Backend + ")"
	}
	return "here"
}

// note is what else a person should know of st at a glance, each cut to
// its first line: a throwaway clone's parent, why the VM last stopped by
// itself (or hostd's error), and status's note (a hostd that died, a
// workspace gone, a hostd that does not answer).
func note(st *status.Status) string {
	var parts []string
	if st.ThrowawayOf != "" {
		parts = append(parts, "throwaway clone of "+st.ThrowawayOf)
	}
	for _, s := range []string{st.Error, st.Note} {
		if s != "" {
			parts = append(parts, firstLine(s))
		}
	}
	return cut(strings.Join(parts, "; "))
}

// firstLine is s up to its first line break.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// cut shortens s to noteMax runes and a mark.
func cut(s string) string {
	if r := []rune(s); len(r) > noteMax {
		return string(r[:noteMax-1]) + "…"
	}
	return s
}
