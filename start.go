package cowork

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// ErrAlreadyRunning means Start found the instance up and ready.
var ErrAlreadyRunning = errors.New("already running")

// abandonTimeout bounds how long an abandoned start waits for the hostd it
// launched to stop, before it kills it.
const abandonTimeout = 45 * time.Second

// AbandonedError is Start's error when ctx ended before the instance was
// ready. Launched says whether this Start had launched the hostd, which it
// then stopped (StopErr says why that failed, if it did). A hostd that it
// found running, ready or still booting, it left as it was: that one is
// another start's to follow, or already serving.
type AbandonedError struct {
	Err      error // ctx's
	Launched bool
	StopErr  error
}

func (e *AbandonedError) Error() string {
	if e.StopErr != nil {
		return fmt.Sprintf("%v; %v", e.Err, e.StopErr)
	}
	return e.Err.Error()
}

func (e *AbandonedError) Unwrap() error { return e.Err }

// Start boots the named instance, launching its hostd (exe, the
// cowork-hostd binary; "" finds the instance's daemon: cowork-hostd with
// HostdBinary, or for a guest on a cluster cowork-hostd-kubevirt with
// KubeVirtHostdBinary) unless one runs, and
// reports each boot event to progress until the instance is ready. When
// ctx ends first, Start returns an *AbandonedError wrapping ctx's error; a
// hostd it launched itself is stopped first (see child.abandon), so an
// interrupted start never leaves a VM booting that nobody waits for. A
// hostd it found running is never stopped, whatever ctx says: stopping
// that one is the caller's choice. An instance found ready is
// ErrAlreadyRunning, even when ctx has already ended.
func Start(ctx context.Context, exe, name string, progress func(*Event)) (err error) {
	paths, err := instance.PathsFor(name)
	if err != nil {
		return err
	}
	cfg, err := instance.Load(name)
	if err != nil {
		return err
	}
	running := instance.Held(paths)
	if running && readyNow(ctx, name) {
		return ErrAlreadyRunning
	}
	var h *child
	launched := false
	defer func() {
		if err == nil || ctx.Err() == nil {
			return
		}
		ab := &AbandonedError{Err: ctx.Err(), Launched: launched}
		if h != nil {
			ab.StopErr = h.abandon(name, paths)
		}
		err = ab
	}()
	if !running {
		if err := ctx.Err(); err != nil {
			return err // interrupted already: launch nothing
		}
		var lerr error
		if h, lerr = launchChild(exe, cfg); lerr != nil {
			return lerr
		}
		launched = true
		err = waitForControl(ctx, paths, h)
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() == hostdwire.ExitAlreadyRunning:
			running, launched = true, false // another start won the race; follow its hostd
		case errors.As(err, &ee) && ee.ExitCode() == hostdwire.ExitUsage:
			return fmt.Errorf("%w%s", anotherBuild(h.cmd.Path, "run", "exit 2"), Diagnostics(paths))
		case errors.As(err, new(*hostdExit)):
			return fmt.Errorf("%w%s", err, Diagnostics(paths))
		default:
			return err
		}
	}
	if running {
		if err := waitForControl(ctx, paths, nil); err != nil {
			return err
		}
	}
	c, err := Dial(name)
	if err != nil {
		return err
	}
	defer c.Close()
	if running {
		if st, err := c.Status(ctx); err == nil && st.Ready {
			return ErrAlreadyRunning
		}
		// A warm pool clone's hostd holds its guest loaded and paused
		// (or is loading it): it runs it once woken. Any other hostd
		// refuses the wake, and goes on with its boot.
		_ = c.Wake(ctx)
	}
	return c.follow(ctx, progress)
}

// readyNow reports whether the instance's hostd says it is ready. It has
// a few seconds of its own, whatever is left of ctx: an instance that is
// ready needs no waiting for, and is reported as such.
func readyNow(ctx context.Context, name string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	c, err := Dial(name)
	if err != nil {
		return false
	}
	defer c.Close()
	st, err := c.Status(ctx)
	return err == nil && st.Ready
}

// child is a hostd this process launched, reaped in the background.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited; err is then set
	err  error
}

// launchChild launches the daemon exe for cfg's instance: `exe run
// --name NAME [ARGS]`. An empty exe is the daemon of the instance's
// backend: cowork-hostd, or cowork-hostd-kubevirt for a guest on a
// cluster.
func launchChild(exe string, cfg *instance.Config, args ...string) (*child, error) {
	if exe == "" {
		var err error
		if exe, err = daemonFor(cfg).find(); err != nil {
			return nil, err
		}
	}
	cmd, err := Launch(exe, cfg.Name, args...)
	if err != nil {
		return nil, err
	}
	h := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		h.err = cmd.Wait()
		close(h.done)
	}()
	return h, nil
}

// abandon stops a hostd whose boot nobody waits for any more, and waits
// until it has exited. It runs in its own session, so the terminal's
// Ctrl-C never reaches it: once it serves its control socket its power is
// cut through it; before that (it may not even hold the lock yet, when a
// stop through the socket would find nothing to stop) SIGTERM, which the
// daemon turns into a stop at whatever point its boot has got to. Should
// it not be gone in time, it is killed (QEMU and virtiofsd die with it).
func (h *child) abandon(name string, paths instance.Paths) error {
	ctx, cancel := context.WithTimeout(context.Background(), abandonTimeout)
	defer cancel()
	// Only its own hostd: one that lost the race to another start's exits
	// by itself, and the winner is not this start's to stop.
	if instance.ReadPid(paths) == h.cmd.Process.Pid {
		if c, err := Dial(name); err == nil {
			_ = c.Stop(ctx, true, 0) // fails when the socket is not served yet
			c.Close()
		}
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM) // an error only when it is gone already
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		_ = h.cmd.Process.Kill()
		<-h.done
		return fmt.Errorf("hostd (pid %d) did not stop within %s, so it was killed", h.cmd.Process.Pid, abandonTimeout)
	}
}

// follow reports events until the boot ends one way or the other. A boot
// that failed ends in the cause hostd gave, in a line or two: the hostd's
// own log is named, not quoted; the console's last lines are added only
// when the guest ran, since then they may be the cause.
func (c *Client) follow(ctx context.Context, progress func(*Event)) error {
	stream, err := c.Events(ctx)
	if err != nil {
		// A hostd whose boot failed at once may be gone before this
		// client asks: its cause is what it left behind, as below.
		if errors.Is(err, ErrUnavailable) && !ended(ctx) {
			return c.lostHostd(ctx, err, false)
		}
		return err
	}
	guestRan, agentUp := false, false
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ended(ctx) {
				return ctx.Err()
			}
			return c.lostHostd(ctx, err, guestRan)
		}
		if progress != nil {
			progress(ev)
		}
		switch ev.Phase {
		case PhaseReady:
			return nil
		case PhaseVMStarted, PhaseKernel:
			guestRan = true
		case PhaseAgentConnected, PhaseProvisioning:
			guestRan, agentUp = true, true
		case PhaseFailed, PhaseStopped:
			msg := ev.Message
			if ev.Error != "" {
				msg += ": " + ev.Error
			}
			// hostd exits after such an event, unless the guest's
			// provisioning failed (it keeps the guest up for a look):
			// the next command must not find it half gone.
			if ev.Phase == PhaseStopped || !agentUp {
				wctx, cancel := context.WithTimeout(ctx, lostHostdWait)
				_ = WaitStopped(wctx, c.Paths)
				cancel()
			}
			return &BootError{Name: c.Name, Cause: msg, Paths: c.Paths, GuestRan: guestRan}
		}
	}
}

// ended reports whether ctx has ended. A stream can break (its deadline
// passed on a timer of its own) a moment before ctx reports it: past its
// deadline, ctx is waited for, so that a timeout is always reported as
// ctx's.
func ended(ctx context.Context) bool {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		<-ctx.Done()
	}
	return ctx.Err() != nil
}

// lostHostdWait bounds how long a failed start waits for hostd to exit
// (and, when its event stream broke, leave the reason behind).
const lostHostdWait = 10 * time.Second

// lostHostd explains an event stream that broke before the boot ended:
// hostd exited (or crashed) without the last event reaching this client.
// What hostd wrote on its way out is the cause; the broken connection is
// not.
func (c *Client) lostHostd(ctx context.Context, streamErr error, guestRan bool) error {
	wctx, cancel := context.WithTimeout(ctx, lostHostdWait)
	defer cancel()
	_ = WaitStopped(wctx, c.Paths)
	if b, err := os.ReadFile(c.Paths.LastStop()); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return &BootError{Name: c.Name, Cause: termsafe.Text(string(bytes.TrimSpace(b))), Paths: c.Paths, GuestRan: guestRan}
	}
	why := streamErr.Error()
	if errors.Is(streamErr, io.EOF) || errors.Is(streamErr, ErrUnavailable) {
		why = "its hostd exited without saying why"
	}
	return fmt.Errorf("instance %s did not start: %s%s", c.Name, why, Diagnostics(c.Paths))
}

// BootError is a start that failed, with the cause hostd gave.
type BootError struct {
	Name, Cause string
	Paths       instance.Paths
	// GuestRan says the VM ran: the console's last lines may then show
	// what went wrong in the guest.
	GuestRan bool
}

func (e *BootError) Error() string {
	msg := fmt.Sprintf("instance %s did not start: %s\nmore in hostd's log, %s", e.Name, e.Cause, e.Paths.HostdLog())
	if !e.GuestRan {
		return msg
	}
	msg += ", and the guest's console, " + e.Paths.SerialLog()
	if t := tailLines(e.Paths.SerialLog(), 10); t != "" {
		msg += "; its last lines:\n" + termsafe.Text(t)
	}
	return msg
}

// WaitStopped waits until the instance's hostd is gone. It looks often:
// a throwaway run's end and a stop then start wait on it, and a look is
// one flock(2).
func WaitStopped(ctx context.Context, paths instance.Paths) error {
	for instance.Held(paths) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
