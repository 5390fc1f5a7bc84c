// Package boot starts an instance and shows its boot on stderr: each phase
// with its time, a timeout, and on Ctrl-C a clean stop, so an interrupted
// start never leaves a half-booted VM behind.
package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// Start boots the named instance and waits until it is ready or timeout
// passes. It reports an instance that was already running with a line and
// no error.
func Start(ctx context.Context, ios *iostreams.IOStreams, name string, timeout time.Duration) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	began := time.Now()
	p := &printer{ios: ios, began: began}
	fmt.Fprintf(ios.ErrOut, "Starting %s...\n", name)
	err = hostd.Start(ctx, exe, name, p.event)
	switch {
	case errors.Is(err, hostd.ErrAlreadyRunning):
		fmt.Fprintf(ios.ErrOut, "%s is already running\n", name)
		return nil
	case err == nil:
		fmt.Fprintf(ios.ErrOut, "%s is ready (%s)\n", name, time.Since(began).Round(100*time.Millisecond))
		return nil
	case ctx.Err() != nil:
		interrupted := !errors.Is(ctx.Err(), context.DeadlineExceeded)
		if interrupted {
			fmt.Fprintf(ios.ErrOut, "\ninterrupted; stopping %s\n", name)
		}
		stopErr := stopNow(name)
		if interrupted {
			return &cmdutil.ExitError{Code: 130}
		}
		msg := fmt.Sprintf("%s did not become ready within %s; stopped it", name, timeout)
		if stopErr != nil {
			msg += fmt.Sprintf(" (stopping failed: %v)", stopErr)
		}
		if paths, perr := instance.PathsFor(name); perr == nil {
			msg += hostd.Diagnostics(paths)
		}
		return errors.New(msg + "\nretry with a longer --timeout, or look at the logs above")
	default:
		return err
	}
}

// stopNow cuts the power of an instance whose boot was abandoned. A hostd
// that this start launched is gone already (hostd.Start stops it); this is
// for one it found booting, launched by another start.
func stopNow(name string) error {
	c, err := hostd.Dial(name)
	if err != nil {
		if errors.Is(err, hostd.ErrNotRunning) {
			return nil
		}
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Stop(ctx, true, 0); err != nil {
		return err
	}
	return hostd.WaitStopped(ctx, c.Paths)
}

// printer shows events as lines with the time since the start; an event's
// message is one line, a guest that put a newline in it cannot fake another.
type printer struct {
	ios   *iostreams.IOStreams
	began time.Time
}

func (p *printer) event(ev *controlpb.Event) {
	at := time.Unix(0, ev.UnixNano).Sub(p.began)
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
	if ev.Error != "" && ev.Phase != controlpb.Phase_FAILED && ev.Phase != controlpb.Phase_STOPPED {
		line += ": " + termsafe.Text(ev.Error)
	}
	fmt.Fprintf(p.ios.ErrOut, "  %s %s\n", stamp, line)
}
