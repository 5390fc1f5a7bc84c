// Package cpcmd is `cowork cp`: files and folders between the host and an
// instance, through the agent.
package cpcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/internal/treecopy"
	"github.com/coworkhq/cowork/units"
)

// Options is a parsed `cowork cp` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Connect func() (*agentclient.Client, error)

	// Src and Dst are the two sides; exactly one is in the guest
	// (GuestSrc or GuestDst), and "-" is a tar stream on stdin or stdout.
	Src, Dst           string
	GuestSrc, GuestDst bool
	User               string
	Quiet              bool
}

// NewCmdCp builds the command; target is the global --name and --agent,
// which an INSTANCE: prefix replaces; runF replaces the run step in tests.
func NewCmdCp(ios *iostreams.IOStreams, target *cmdutil.AgentTarget, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios, Connect: target.Connect}
	cmd := &cobra.Command{
		Use:   "cp [flags] SRC DST",
		Short: "Copy files and folders between this machine and the sandbox",
		Long: `Copy a file or a folder, with all in it, between this machine and an
instance. The guest's side is written INSTANCE:PATH, or :PATH for the
instance --name names (sandbox by default); a relative guest PATH starts in
/workspace. A local path with a colon in its first part is written ./a:b.

A copy into a folder that exists keeps its name; otherwise it takes DST's.
A link to a folder at DST is followed only when DST ends in /. Modes (less
the receiver's umask) and times are kept, and links are copied as links,
never followed. The files belong to the user who receives them: you on this
machine, the guest user (cowork, or --user) in the guest. Nothing appears at
DST until all of it has arrived (an interrupted copy leaves nothing), and a
folder is never merged into one that is there.

What comes from the guest is checked on the way: nothing is written outside
DST, no setuid file or device is made, and the copy stops before this
machine's disk has less than 1 GiB free.

SRC - reads a tar stream from stdin and unpacks it into the guest folder
DST as tar does, entries landing as they come; DST - writes the guest's SRC
to stdout as a tar stream.`,
		Example: `  cowork cp ./src sandbox:/workspace/src
  cowork cp sandbox:/home/cowork/.bash_history .
  cowork cp :results.json ./results.json
  tar -C dist -cf - . | cowork cp - :site
  cowork cp :build - | tar -tvf -`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cmdutil.FlagErrorf("cp needs SRC and DST, e.g. cowork cp ./notes.txt :notes.txt")
			}
			if err := o.parse(args, target); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return Run(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVarP(&o.User, "user", "u", "", "guest user to read or write as (default: the agent's default user, cowork)")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "print no progress or summary")
	return cmd
}

// parse works out which side is the guest's, and which instance it is.
func (o *Options) parse(args []string, target *cmdutil.AgentTarget) error {
	srcName, src, srcGuest := splitGuest(args[0])
	dstName, dst, dstGuest := splitGuest(args[1])
	switch {
	case srcGuest == dstGuest:
		return cmdutil.FlagErrorf("cp copies between this machine and an instance: write one side as INSTANCE:PATH (or :PATH), e.g. cowork cp ./notes.txt :notes.txt")

	case src == "" && !srcGuest || dst == "" && !dstGuest:
		return cmdutil.FlagErrorf("name a local path on both sides (. for this folder)")
	}
	name := srcName + dstName // one of them is ""
	if name != "" {
		if target.Address != "" {
			return cmdutil.FlagErrorf("--agent names an agent, and %s: names an instance; write :PATH with --agent", name)
		}
		target.Instance = name
	}
	o.Src, o.Dst, o.GuestSrc, o.GuestDst = src, dst, srcGuest, dstGuest
	if o.stdin() && o.IO.IsStdinTTY() {
		return cmdutil.FlagErrorf("SRC - reads a tar stream, and stdin is a terminal: pipe one in (tar -cf - DIR | cowork cp - :DEST)")
	}
	if o.stdout() && o.IO.IsStdoutTTY() {
		return cmdutil.FlagErrorf("DST - writes a tar stream, and stdout is a terminal: pipe it (| tar -xf -) or redirect it (> copy.tar)")
	}
	return nil
}

// stdin and stdout say a side is a tar stream: a local - (a guest's :- is
// a file named -).
func (o *Options) stdin() bool  { return o.Src == "-" && !o.GuestSrc }
func (o *Options) stdout() bool { return o.Dst == "-" && !o.GuestDst }

// splitGuest reads INSTANCE:PATH (or :PATH): a colon before any slash.
func splitGuest(arg string) (name, path string, guest bool) {
	i := strings.IndexByte(arg, ':')
	if i < 0 || strings.ContainsRune(arg[:i], '/') {
		return "", arg, false
	}
	return arg[:i], arg[i+1:], true
}

// Run copies. Interrupted, it stops the copy, and what was copied so far
// is removed on both sides.
func Run(ctx context.Context, o *Options) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := o.Connect()
	if err != nil {
		return err
	}
	defer client.Close()
	p := newProgress(o)
	co := cowork.CopyOptions{User: o.User, Progress: p.update}
	var st treecopy.Stats
	switch {
	case o.stdin():
		err = cowork.CopyInStream(ctx, client, o.IO.In, o.Dst, co)
	case o.stdout():
		err = cowork.CopyOutStream(ctx, client, o.Src, o.IO.Out, co)
	case o.GuestDst:
		st, err = cowork.CopyIn(ctx, client, o.Src, o.Dst, co)
	default:
		st, err = cowork.CopyOut(ctx, client, o.Src, o.Dst, co)
	}
	p.done()
	if err != nil && ctx.Err() != nil {
		return errors.New("interrupted: nothing was copied")
	}
	if err != nil {
		return err
	}
	if !o.Quiet && !o.stdin() && !o.stdout() {
		fmt.Fprintf(o.IO.ErrOut, "copied %s to %s\n", summary(st), side(o.Dst, o.GuestDst))
	}
	warnSkipped(o.IO.ErrOut, st)
	return nil
}

// warnSkipped says what was not copied. The name is the guest's, when
// the copy came out of it: printed inert.
func warnSkipped(w io.Writer, st treecopy.Stats) {
	if st.Skipped > 0 {
		fmt.Fprintf(w, "cowork: warning: %d entries that are neither files, folders nor links were not copied (first: %s)\n", st.Skipped, termsafe.Line(st.FirstSkipped))
	}
}

func side(p string, guest bool) string {
	if guest {
		return "the guest's " + cowork.GuestPath(p)
	}
	return p
}

func summary(st treecopy.Stats) string {
	var parts []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(st.Files, "file", "files")
	add(st.Dirs, "folder", "folders")
	add(st.Links, "link", "links")
	if len(parts) == 0 {
		parts = append(parts, "nothing")
	}
	return strings.Join(parts, ", ") + " (" + units.Size(st.Bytes).String() + ")"
}

// progress shows the bytes moved on a terminal's stderr, at most a few
// times a second, and clears its line at the end.
type progress struct {
	o     *Options
	mu    sync.Mutex
	last  time.Time
	shown bool
}

func newProgress(o *Options) *progress { return &progress{o: o} }

func (p *progress) update(n int64) {
	if p.o.Quiet || !p.o.IO.IsStderrTTY() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = time.Now(), true
	fmt.Fprintf(p.o.IO.ErrOut, "\r\033[Kcopying: %s", units.Size(n))
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.o.IO.ErrOut, "\r\033[K")
	}
}
