// Package throwaway runs `cowork exec --rm` and `cowork ask --rm`: in a
// clone of the instance taken for the run (cowork.Throwaway) and deleted
// after it, and keeps the instance's pool topped up in the background.
package throwaway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/guestrun"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/units"
)

// Options say where a throwaway run comes from and what it is, for its
// record.
type Options struct {
	Parent   string // the instance to clone
	Snapshot string // its snapshot to clone; "" for the pool's or its latest
	What     string // exec or ask
	Command  string
	// Ready, if set, is told of the clone once it is ready for the run.
	Ready func(*cowork.Throwaway)
}

// Run runs fn in a throwaway clone of o.Parent and discards the clone;
// its result is fn's (the guest command's exit code, as an
// *cmdutil.ExitError). What discarding could not do is said on stderr.
func Run(ctx context.Context, ios *iostreams.IOStreams, o Options, fn func(context.Context, *cowork.Instance) error) error {
	parent, err := cowork.Open(o.Parent)
	if err != nil {
		return err
	}
	note := func(s string) { fmt.Fprintln(ios.ErrOut, "cowork:", s) }
	// Ctrl-C (or SIGTERM, or a closed terminal's SIGHUP) while the clone
	// boots abandons the boot (the clone's VM is stopped and the clone
	// deleted), and while it is discarded is ignored: either way no VM is
	// left behind. Each is also held, from before the boot to the end:
	// the run, which guestrun attaches, takes it from there and passes it
	// to the guest, even one that came before it attached (or in a boot
	// that ended well all the same). A closed stdout (`| head -1`) must
	// not kill cowork with the clone left either: the write fails
	// instead, and the clone is discarded when the run ends.
	signal.Ignore(syscall.SIGPIPE)
	held := make(chan os.Signal, 4)
	signal.Notify(held, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(held)
	bctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	began := time.Now()
	t, err := parent.Throwaway(bctx, cowork.ThrowawayOptions{Snapshot: o.Snapshot, Note: note})
	stopSignals()
	if err != nil {
		return err
	}
	refill := func() {
		if s, err := parent.PoolSettings(); err == nil && s.Size > 0 {
			if err := Refill(parent); err != nil {
				note(fmt.Sprintf("could not start refilling the pool of %s: %v", parent.Name, err))
			}
		}
	}
	if o.Ready != nil {
		o.Ready(t)
	}
	note(fmt.Sprintf("run %s in %s (%s, %s; ready in %s)", t.ID, t.Name, t.Ready, madeFrom(t), time.Since(began).Round(10*time.Millisecond)))
	runErr := refillAround(refillAfter, refill, func() error { return fn(guestrun.WithHeldSignals(ctx, held), t.Instance) })
	// The guest command's exit code, or -1 and why it did not end with one.
	code, cause := 0, runErr
	var exit *cmdutil.ExitError
	switch {
	case errors.As(runErr, &exit):
		code, cause = exit.Code, nil
	case runErr != nil:
		code = -1
	}
	info, err := t.Discard(ctx, cowork.RunResult{What: o.What, Command: o.Command, ExitCode: code, Err: cause})
	if err != nil {
		note("warning: " + err.Error())
	} else {
		note(endedNote(t, code, info))
	}
	return runErr
}

// madeFrom says what the run's clone t was made from: a snapshot of its
// parent's, or (on a cluster, where there are none) the parent's disk.
func madeFrom(t *cowork.Throwaway) string {
	if t.Snapshot == "" {
		return "its disk cloned from " + t.Parent.Name + "'s"
	}
	return "from snapshot " + t.Snapshot
}

// endedNote is what a run that ended with code, its clone deleted, says:
// its network in short, which a clone on a cluster has none of here (the
// namespace's egress proxy saw it).
func endedNote(t *cowork.Throwaway, code int, info *audit.RunInfo) string {
	s := fmt.Sprintf("run %s ended (exit %d); %s deleted; ", t.ID, code, t.Name)
	if t.Config.Remote() {
		return s + fmt.Sprintf("its traffic is in the audit log of namespace %s's egress proxy, its run in `cowork proxy --runs%s`", t.Config.Cluster.Namespace, instance.NameFlag(t.Parent.Name))
	}
	return s + fmt.Sprintf("network: %d flows, %d blocked, %s out (`cowork proxy --runs%s`)", info.Stats.Flows, info.Stats.Blocked, units.Size(info.Stats.BytesOut), instance.NameFlag(t.Parent.Name))
}

// refillAfter is how long a run goes before the pool's refill starts
// beside it. A short run (exec --rm) ends first and its refill starts
// then: on a host with few cores, a refill's clone starting while the run
// executes took a third of the run's time (0.51 s against 0.36 s from
// ready to done, exec --rm true with a warm clone, TCG guest, two cores).
// A long one (ask --rm) has its next clone made while it works.
const refillAfter = 2 * time.Second

// refillAround runs run, and refill once: when run returns, or after
// after, whichever comes first.
func refillAround(after time.Duration, refill func(), run func() error) error {
	later := time.AfterFunc(after, refill)
	err := run()
	if later.Stop() {
		refill()
	}
	return err
}

// maxPoolLog is the size past which the pool's log starts afresh.
const maxPoolLog = 1 << 20

// Refill starts `cowork pool fill --background` for parent, detached (its
// own session, output to the pool's log): it makes the pool's next clone,
// and exits at once when another filler has the pool.
func Refill(parent *cowork.Instance) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// Appended to, so that a filler's error outlives the next run's
	// refill (which exits at once while one fills); started afresh once
	// it is big, which only many failures make it.
	how := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if st, err := os.Stat(parent.Paths.PoolLog()); err == nil && st.Size() > maxPoolLog {
		how |= os.O_TRUNC
	}
	logf, err := os.OpenFile(parent.Paths.PoolLog(), how, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "--name", parent.Name, "pool", "fill", "--background")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}
