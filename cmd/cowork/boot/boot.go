// Package boot starts an instance and shows its boot on stderr: each phase
// with its time, a timeout, and on Ctrl-C a stop, so an interrupted start
// never leaves a half-booted VM of its own behind (and never stops one it
// did not boot).
package boot

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// Start boots the named instance and waits until it is ready or timeout
// passes. It reports an instance that was already running with a line and
// no error.
func Start(ctx context.Context, ios *iostreams.IOStreams, name string, timeout time.Duration) error {
	_, err := StartFollow(ctx, ios, name, timeout)
	return err
}

// Followed is what a boot that StartFollow followed went through.
type Followed struct {
	// Provisioned: the guest provisioned itself during this boot.
	Provisioned bool
}

// StartFollow is Start, and says what the boot went through.
func StartFollow(ctx context.Context, ios *iostreams.IOStreams, name string, timeout time.Duration) (Followed, error) {
	p, err := start(ctx, ios, name, timeout)
	return Followed{Provisioned: p.provisioned}, err
}

func start(ctx context.Context, ios *iostreams.IOStreams, name string, timeout time.Duration) (*printer, error) {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	began := time.Now()
	p := &printer{ios: ios, began: began}
	fmt.Fprintf(ios.ErrOut, "Starting %s...\n", name)
	err := cowork.Start(ctx, "", name, p.event)
	var ab *cowork.AbandonedError
	switch {
	case errors.Is(err, cowork.ErrAlreadyRunning):
		fmt.Fprintf(ios.ErrOut, "%s is already running\n", name)
		return p, nil
	case err == nil:
		fmt.Fprintf(ios.ErrOut, "%s is ready (%s)\n", name, time.Since(began).Round(100*time.Millisecond))
		return p, nil
	case errors.As(err, &ab):
		return p, abandoned(ios, name, timeout, ab, p.last)
	default:
		return p, err
	}
}

// abandoned reports a start that ended before the guest was ready: on
// Ctrl-C, or after timeout with why (the last boot phase reached) and
// where the guest's console is. cowork.Start stopped the VM if this start
// booted it; one that was booting already it left running.
func abandoned(ios *iostreams.IOStreams, name string, timeout time.Duration, ab *cowork.AbandonedError, last cowork.Phase) error {
	var msg string
	switch {
	case !errors.Is(ab.Err, context.DeadlineExceeded):
		msg = "\ninterrupted; "
	case !ab.Launched:
		msg = fmt.Sprintf("%s did not become ready within %s; ", name, timeout)
	default:
		msg = fmt.Sprintf("%s did not become ready within %s: %s; ", name, timeout, notReached(last))
	}
	if ab.Launched {
		msg += "stopped the VM this start booted"
	} else {
		msg += fmt.Sprintf("%s was already starting (another `cowork start`?) and is left running; see `cowork status%s`", name, instance.NameFlag(name))
	}
	if ab.StopErr != nil {
		msg += fmt.Sprintf(" (stopping failed: %v)", ab.StopErr)
	}
	if !errors.Is(ab.Err, context.DeadlineExceeded) {
		fmt.Fprintln(ios.ErrOut, msg)
		return &cmdutil.ExitError{Code: 130}
	}
	if ab.Launched {
		if paths, err := instance.PathsFor(name); err == nil {
			msg += fmt.Sprintf("\nthe guest's console log is %s", paths.SerialLog()) + cowork.Diagnostics(paths)
		}
		msg += "\nretry with a longer --timeout, or look at the logs above"
	}
	return errors.New(msg)
}

// notReached says how far a boot got that was not ready in time, from the
// last phase it reported.
func notReached(last cowork.Phase) string {
	switch last {
	case cowork.PhaseUnspecified:
		return "the VM never started"
	case cowork.PhaseVMStarted:
		return "the guest never got to its kernel (nothing on its console)"
	case cowork.PhaseKernel:
		return "the guest booted but never reached its agent"
	default:
		return "the guest's agent answered, but its provisioning had not finished"
	}
}

// printer shows events as lines with the time since the start; an event's
// message is one line, a guest that put a newline in it cannot fake another.
type printer struct {
	ios   *iostreams.IOStreams
	began time.Time
	last  cowork.Phase // the furthest the boot got
	// provisioned: the guest reported provisioning work in this boot.
	provisioned bool
}

func (p *printer) event(ev *cowork.Event) {
	if ev.Phase == cowork.PhaseProvisioning {
		p.provisioned = true
	}
	if ev.Phase <= cowork.PhaseReady {
		p.last = max(p.last, ev.Phase)
	}
	at := ev.At.Sub(p.began)
	if at < 0 {
		at = 0 // an event from before this command attached
	}
	stamp := fmt.Sprintf("[%5.1fs]", at.Seconds())
	if p.ios.ColorEnabled() {
		stamp = "\x1b[2m" + stamp + "\x1b[0m"
	}
	// Provisioning lines and errors quote the guest: shown, never obeyed.
	// The cause of a boot that ended is the error start returns: it is
	// not shown twice.
	line := termsafe.Line(ev.Message)
	if ev.Error != "" && ev.Phase != cowork.PhaseFailed && ev.Phase != cowork.PhaseStopped {
		line += ": " + termsafe.Text(ev.Error)
	}
	fmt.Fprintf(p.ios.ErrOut, "  %s %s\n", stamp, line)
}
