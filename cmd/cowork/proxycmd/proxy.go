// Package proxycmd is `cowork proxy`: the guest's network traffic, from the
// audit log, as it happens.
package proxycmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/units"
)

// Options is a parsed `cowork proxy` command line.
type Options struct {
	IO      *iostreams.IOStreams
	Name    string
	LogFile string
	Verbose bool
	JSON    bool
	Since   time.Duration
	Follow  bool
	Runs    bool // the throwaway runs' log, not the instance's own
	// Exec keeps only the records whose owner (the guest process behind
	// the flow, as the guest claims it) belongs to the exec of this id, or
	// of an id it begins.
	Exec string
	// Ask keeps only the records of the ask (or claude run) of this id,
	// or of an id it begins: its API calls, by the relay session they
	// went through, and the flows of the processes under its claude, by
	// their owner's exec (see OfAsk).
	Ask string
}

// NewCmdProxy builds the command; name is the global --name.
func NewCmdProxy(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Watch the sandbox's network traffic",
		Long: `Show the guest's network traffic from the audit log: every connection and
proxied request with its verdict, name, destination, bytes and duration, then
follow it live. Every DNS query and flow is recorded in
$COWORK_HOME/NAME/network.jsonl whether or not this command runs; the guest's
HTTP(S) proxy is at 192.168.127.1:7890.

A flow's name is the one the guest resolved through the gateway's DNS (or
the proxy resolved). The name the guest's own TLS SNI or HTTP Host header
claims is shown beside it as "sni says NAME" when it differs, flagged
MISMATCH: the guest can write anything there.

-v adds DNS queries, the rule behind each verdict, HTTP details and every
claimed name; --json prints the log's own lines. -l FILE also appends what
is shown to FILE.

--runs shows the log of the instance's throwaway runs (exec --rm, ask --rm)
instead, runs.jsonl: each run's network records, marked with its id, then a
RUN line with what ran, how it ended and what its network did.

Each flow and DNS query names the guest process behind it, as the guest's
agent says (a claim of the guest's: "owner" in --json, "by COMM[PID]" with
-v). --exec ID keeps only those of one exec: its id is printed by "cowork
exec -v". --ask ID keeps those of one ask or claude run: its API calls
through the relay, and the flows of the processes under its claude; its
id, its API session's, is printed at the end of "cowork ask" and listed by
"cowork usage".

For an instance on a cluster (cowork init --backend kubevirt) the log is
its namespace's egress proxy's, read through the API server by
cowork-hostd-kubevirt (your kubeconfig needs "list" on pods and "create"
on pods/portforward there): the traffic of every sandbox of the
namespace, each record naming its client's address ("from IP"). The proxy
does not know the guest's processes, so --exec matches nothing there.`,
		Example: `  cowork proxy
  cowork proxy -l proxy.log
  cowork proxy -v --since 1h
  cowork proxy --json --follow=false | jq 'select(.verdict == "deny")'
  cowork proxy --runs --since 0 --follow=false
  cowork proxy --exec 3f9c2a --since 0 --follow=false
  cowork proxy --ask 9b1e07 --since 1h --follow=false`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if o.Exec != "" && !validExecPrefix(o.Exec) {
				return cmdutil.FlagErrorf("--exec %q: want an exec id, hex digits as cowork exec -v prints them", o.Exec)
			}
			if o.Exec != "" && o.Ask != "" {
				return cmdutil.FlagErrorf("--exec and --ask: give one of them")
			}
			if o.Ask != "" && !validExecPrefix(o.Ask) {
				return cmdutil.FlagErrorf("--ask %q: want an ask's id, hex digits as cowork ask prints them at its end", o.Ask)
			}
			if o.Since < 0 {
				return cmdutil.FlagErrorf("--since %s: want how long ago to start, like 5m or 1h (0: all of the log)", o.Since)
			}
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.LogFile, "log", "l", "", "also append the output to this file")
	f.BoolVarP(&o.Verbose, "verbose", "v", false, "show DNS queries, rules and HTTP details too")
	f.BoolVar(&o.JSON, "json", false, "print the audit log's JSON lines")
	f.DurationVar(&o.Since, "since", 10*time.Minute, "show history from this long ago (0: all of it)")
	f.BoolVarP(&o.Follow, "follow", "f", true, "keep showing new traffic until interrupted")
	f.BoolVar(&o.Runs, "runs", false, "show the throwaway runs' log (runs.jsonl)")
	f.StringVar(&o.Exec, "exec", "", "show only the traffic of the exec of this `ID`")
	f.StringVar(&o.Ask, "ask", "", "show only the traffic of the ask (or claude run) of this `ID`")
	return cmd
}

func run(ctx context.Context, o *Options) error {
	inst, err := cowork.Open(o.Name)
	if err != nil {
		return err
	}
	// A cluster instance's traffic is in its namespace's egress proxy's
	// log; its runs log is this machine's, whatever the backend: its
	// throwaway runs end with their line there too.
	src := logSource{}
	if inst.Config.Remote() && !o.Runs {
		if src, err = o.clusterLog(inst); err != nil {
			return err
		}
	} else {
		src = o.localLog(inst)
	}
	out, done, err := o.output()
	if err != nil {
		return err
	}
	defer done()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	skipped, err := src.stream(ctx, o.since(), o.Follow, o.show(out))
	if skipped > 0 {
		fmt.Fprintf(o.IO.ErrOut, "cowork: skipped %d damaged lines of %s\n", skipped, src.name)
	}
	return err
}

// logSource is where the records come from: a log on this machine, or a
// cluster's (cluster.go).
type logSource struct {
	name   string // what a damaged line is said to be of
	stream func(ctx context.Context, since time.Time, follow bool, fn func(*audit.Record) error) (skipped int, err error)
}

// localLog is the instance's log here: its network log, or with --runs
// its runs log (a cluster instance's too: run picks clusterLog for its
// traffic).
func (o *Options) localLog(inst *cowork.Instance) logSource {
	logPath := inst.Paths.NetworkLog()
	if o.Runs {
		logPath = inst.Paths.Runs()
	}
	if o.Follow && o.IO.IsStderrTTY() {
		fmt.Fprintf(o.IO.ErrOut, "following %s (Ctrl-C to stop)\n", logPath)
	}
	return logSource{name: logPath, stream: func(ctx context.Context, since time.Time, follow bool, fn func(*audit.Record) error) (int, error) {
		return audit.Stream(ctx, logPath, since, follow, fn)
	}}
}

// output is where the records go: stdout, and the -l file too; done
// closes that file.
func (o *Options) output() (out io.Writer, done func(), err error) {
	if o.LogFile == "" {
		return o.IO.Out, func() {}, nil
	}
	f, err := os.OpenFile(o.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	return io.MultiWriter(o.IO.Out, f), func() { f.Close() }, nil
}

// since is the time of the oldest record to show.
func (o *Options) since() time.Time {
	if o.Since <= 0 {
		return time.Time{}
	}
	return time.Now().Add(-o.Since)
}

// show writes each record --exec and --ask keep to out, as a line or
// (--json) as its JSON, whether the log is here or a cluster's.
func (o *Options) show(out io.Writer) func(*audit.Record) error {
	color := o.IO.ColorEnabled() && o.LogFile == ""
	return func(r *audit.Record) error {
		if o.Exec != "" && !r.OfExec(o.Exec) || o.Ask != "" && !r.OfAsk(o.Ask) {
			return nil
		}
		if o.JSON {
			b, err := FormatJSON(r)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "%s\n", b)
			return err
		}
		if line := Format(r, o.Verbose, color); line != "" {
			_, err := fmt.Fprintln(out, line)
			return err
		}
		return nil
	}
}

// validExecPrefix says whether s can begin an exec id: 4 to 16 lowercase
// hex digits.
func validExecPrefix(s string) bool {
	if len(s) < 4 || len(s) > 16 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// FormatJSON is one record as the log's JSON line, its text escaped where
// it would drive a terminal (the values stay the same).
func FormatJSON(r *audit.Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return termsafe.JSON(b), nil
}

// Format is one record as a readable line; "" for what is shown only with
// verbose (DNS queries). Names, URLs, answers and errors come from the
// guest (or from servers it chose): everything after the verdict is
// printed through termsafe, so none of it can drive the terminal or start
// a fake line.
func Format(r *audit.Record, verbose, color bool) string {
	if r.Kind == audit.KindDNS && !verbose {
		return ""
	}
	if r.Kind == audit.KindRun && r.Run != nil {
		return formatRun(r)
	}
	if r.Kind == audit.KindGap {
		return fmt.Sprintf("%s GAP   %d records lost from %s: the host could not write the audit log, and refused new traffic meanwhile",
			r.Time.Local().Format("15:04:05"), r.Suppressed, r.Start.Local().Format("15:04:05"))
	}
	verdict := "ALLOW"
	switch {
	case r.Verdict == audit.Deny:
		verdict = "DENY "
		if color {
			verdict = "\x1b[31m" + verdict + "\x1b[0m"
		}
	case r.Learn: // let through by learn mode, not by the policy
		verdict = "LEARN"
		if color {
			verdict = "\x1b[33m" + verdict + "\x1b[0m"
		}
	case color:
		verdict = "\x1b[32m" + verdict + "\x1b[0m"
	}
	head := r.Time.Local().Format("15:04:05") + " " + verdict
	if r.RunID != "" {
		head = termsafe.Line(r.RunID) + " " + head
	}
	var b strings.Builder
	fmt.Fprintf(&b, " %-7s", r.Kind)
	name := r.Name
	if name == "" {
		name = "-"
	}
	switch r.Kind {
	case audit.KindDNS:
		fmt.Fprintf(&b, " %s %s %s", name, r.QType, r.RCode)
		if len(r.Answers) > 0 {
			fmt.Fprintf(&b, " → %s", strings.Join(r.Answers, ", "))
		}
	case audit.KindICMP:
		fmt.Fprintf(&b, " ping %s", r.Dst)
	case audit.KindIP:
		fmt.Fprintf(&b, " protocol %d → %s", r.Proto, r.Dst)
	case audit.KindPublish, audit.KindUnpublish:
		fmt.Fprintf(&b, " %s → guest port %d", r.Dst, r.GuestPort)
		if r.Proto == 17 {
			b.WriteString("/udp")
		}
	case audit.KindTool:
		if t := r.Tool; t != nil {
			fmt.Fprintf(&b, " %s %s from %s, %s", t.Name, t.ID, r.Start.Local().Format("15:04:05"),
				(time.Duration(r.DurationMs * float64(time.Millisecond))).Round(time.Millisecond))
		}
		fmt.Fprintf(&b, "  session %s (as claude's stream in the guest says)", r.Session)
	default:
		fmt.Fprintf(&b, " %s", name)
		if r.Dst != "" {
			fmt.Fprintf(&b, " → %s", r.Dst)
		}
		// What the guest's own bytes claimed: shown when it is not the
		// name the flow was decided under, and always with -v.
		if r.ClaimedName != "" && (r.NameMismatch || verbose) {
			fmt.Fprintf(&b, "  %s says %s", r.ClaimedFrom, r.ClaimedName)
			if r.NameMismatch {
				// Ours, coloured: it goes out as it is, after what came
				// before has been made inert.
				flag := "MISMATCH"
				if color {
					flag = "\x1b[33m" + flag + "\x1b[0m"
				}
				head += termsafe.Line(b.String()) + " " + flag
				b.Reset()
			}
		}
		if r.Verdict == audit.Allow {
			fmt.Fprintf(&b, "  ↑%s ↓%s %s", units.Size(r.BytesOut), units.Size(r.BytesIn), (time.Duration(r.DurationMs * float64(time.Millisecond))).Round(time.Millisecond))
		}
		if verbose && r.Method != "" {
			fmt.Fprintf(&b, "  %s %s", r.Method, r.URL)
			if r.Status != 0 {
				fmt.Fprintf(&b, " %d", r.Status)
			}
		}
		if r.Session != "" {
			fmt.Fprintf(&b, "  session %s", r.Session)
		}
		if u := r.Usage; u != nil {
			fmt.Fprintf(&b, "  %s tokens %s", budget.Tokens(u.InputTokens+u.OutputTokens+u.CacheCreationInputTokens+u.CacheReadInputTokens+u.EstimatedTokens), budget.USD(u.CostUSD))
			if verbose && u.Model != "" {
				fmt.Fprintf(&b, " (%s)", u.Model)
			}
		}
	}
	if r.Client != "" {
		// A cluster's egress proxy serves every sandbox of its namespace:
		// which one it was (its pod's address; the port with -v).
		client := r.Client
		if host, _, err := net.SplitHostPort(client); err == nil && !verbose {
			client = host
		}
		fmt.Fprintf(&b, "  from %s", client)
	}
	if verbose && r.Owner != nil {
		fmt.Fprintf(&b, "  by %s[%d]", r.Owner.Comm, r.Owner.PID)
		if r.Owner.Exec != "" {
			fmt.Fprintf(&b, " exec %s", r.Owner.Exec)
		}
	}
	if r.Rule != "" && (verbose || r.Verdict == audit.Deny || r.Learn) {
		fmt.Fprintf(&b, "  [%s]", r.Rule)
	}
	if r.Suppressed > 0 {
		fmt.Fprintf(&b, "  (%d more like it in %s, not logged one by one)", r.Suppressed, time.Duration(r.DurationMs*float64(time.Millisecond)).Round(time.Second))
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  error: %s", r.Error)
	}
	if r.Clipped {
		b.WriteString("  (clipped: too long for the log)")
	}
	return head + termsafe.Line(b.String())
}

// formatRun is a throwaway run's line: its id, what ran and how it ended,
// the clone it ran in, and what its network did. The command is the
// user's, and the clone's name and the error cowork's, but all go through
// termsafe like the rest.
func formatRun(r *audit.Record) string {
	in := r.Run
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s RUN   %s %q", r.RunID, r.Time.Local().Format("15:04:05"), in.What, in.Command)
	if in.ExitCode >= 0 {
		fmt.Fprintf(&b, " exit %d", in.ExitCode)
	}
	of := "snapshot " + in.Snapshot
	if in.Snapshot == "" {
		of = "its parent's disk, in the cluster" // a cluster instance has no snapshots
	}
	fmt.Fprintf(&b, " in %s (%s clone %s of %s)", (time.Duration(r.DurationMs * float64(time.Millisecond))).Round(10*time.Millisecond), in.Ready, in.Instance, of)
	fmt.Fprintf(&b, "  %d flows, %d blocked, %d DNS, ↑%s ↓%s", in.Stats.Flows, in.Stats.Blocked, in.Stats.Queries, units.Size(in.Stats.BytesOut), units.Size(in.Stats.BytesIn))
	if in.Dropped > 0 {
		fmt.Fprintf(&b, "  (%d records not kept)", in.Dropped)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  error: %s", r.Error)
	}
	return termsafe.Line(b.String())
}
