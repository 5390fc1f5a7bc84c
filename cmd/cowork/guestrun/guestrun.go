// Package guestrun attaches the local terminal or stdio to a process in the
// guest: raw mode and window sizes for a pseudo-terminal, Ctrl-C forwarding
// for plain pipes, and the guest's exit code as the command's.
package guestrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// Options is one process to run in the guest.
type Options struct {
	Argv []string
	Env  []string
	Dir  string
	User string
	// TTY runs the process on a guest pseudo-terminal wired to the local
	// terminal in raw mode. It needs stdin to be a terminal.
	TTY bool
	// ExecID names the exec in the audit log (agentclient.NewExecID).
	ExecID string
}

// heldKey is the context key of WithHeldSignals' channel.
type heldKey struct{}

// WithHeldSignals has the run that ctx goes to take its signals from
// held, a channel its caller has had registered (signal.Notify) since
// before the run attached, rather than register a channel of its own. A
// throwaway run boots its clone under a handler that abandons the boot;
// were there a moment between that handler and the run's own, a Ctrl-C
// in it would end cowork at once and leave the clone running. A signal
// held in that moment is acted on as the run attaches, as if it came
// just after. The run adds the signals it handles to held's and leaves
// held registered when it ends: the caller stops it once it is done.
func WithHeldSignals(ctx context.Context, held chan os.Signal) context.Context {
	return context.WithValue(ctx, heldKey{}, held)
}

// notify is the channel a run takes the signals sig on: its caller's
// (WithHeldSignals), which sig are added to, or a new one of size; stop
// unregisters only a channel of the run's own.
func notify(ctx context.Context, size int, sig ...os.Signal) (ch chan os.Signal, stop func()) {
	if held, ok := ctx.Value(heldKey{}).(chan os.Signal); ok && held != nil {
		signal.Notify(held, sig...)
		return held, func() {}
	}
	ch = make(chan os.Signal, size)
	signal.Notify(ch, sig...)
	return ch, func() { signal.Stop(ch) }
}

// Run runs o in the guest on the streams and returns nil on exit 0, an
// *cmdutil.ExitError with the guest's code otherwise, or the error that
// kept the process from running.
func Run(ctx context.Context, ios *iostreams.IOStreams, client *agentclient.Client, o Options) error {
	eo := agentclient.ExecOptions{Argv: o.Argv, Env: o.Env, Dir: o.Dir, User: o.User, ExecID: o.ExecID}
	return Attach(ctx, ios, o.TTY, &eo, func(ctx context.Context) (agentclient.ExitStatus, error) {
		return client.Exec(ctx, eo)
	})
}

// Attach wires the local streams into eo (stdio; with tty the terminal in
// raw mode and its size, else Ctrl-C forwarding), runs fn, and turns its
// result into the command's: nil on exit 0, an *cmdutil.ExitError with the
// guest's code, or the error that kept the process from running.
func Attach(ctx context.Context, ios *iostreams.IOStreams, tty bool, eo *agentclient.ExecOptions, fn func(context.Context) (agentclient.ExitStatus, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if eo.Stdin == nil && !ios.IsStdinNull() {
		eo.Stdin = ios.In
	}
	eo.Stdout, eo.Stderr = orWriter(eo.Stdout, ios.Out), orWriter(eo.Stderr, ios.ErrOut)

	if tty {
		restore, err := attachTerminal(ctx, cancel, ios, eo)
		if err != nil {
			return err
		}
		defer restore()
	} else {
		stop := forwardSignals(ctx, cancel, ios, eo)
		defer stop()
	}

	st, err := fn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return &cmdutil.ExitError{Code: 130}
		}
		return startError(err)
	}
	if st.Code != 0 {
		return &cmdutil.ExitError{Code: st.Code}
	}
	return nil
}

// attachTerminal puts the local terminal in raw mode, sizes the guest's
// terminal like it and keeps it sized. The returned function restores the
// terminal; it is also run when cowork itself is told to stop.
func attachTerminal(ctx context.Context, cancel context.CancelFunc, ios *iostreams.IOStreams, eo *agentclient.ExecOptions) (func(), error) {
	rows, cols, err := ios.TerminalSize()
	if err != nil {
		rows, cols = 24, 80
	}
	eo.TTY = &agentclient.TerminalSize{Rows: uint16(rows), Cols: uint16(cols)}
	if t := os.Getenv("TERM"); t != "" {
		eo.Env = append([]string{"TERM=" + t}, eo.Env...)
	}
	restoreTerm, err := ios.MakeRaw()
	if err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}

	resize := make(chan agentclient.TerminalSize, 1)
	eo.Resize = resize
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	// In raw mode Ctrl-C is a byte for the guest; signals come from
	// elsewhere (kill, a closed terminal, a Ctrl-C a caller held from
	// before the terminal went raw) and end the session, the terminal
	// restored.
	stopSigs, stopStopSigs := notify(ctx, 1, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-stopSigs:
				cancel()
			case <-winch:
				if r, c, err := ios.TerminalSize(); err == nil {
					select {
					case resize <- agentclient.TerminalSize{Rows: uint16(r), Cols: uint16(c)}:
					default: // one pending size is enough; the next SIGWINCH brings the latest
					}
				}
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		stopStopSigs()
		close(done)
		restoreTerm()
	}, nil
}

// forwardSignals sends Ctrl-C and friends to the guest process instead of
// dying of them: the first SIGINT interrupts the guest process, a second
// kills it, a third gives up on it.
func forwardSignals(ctx context.Context, cancel context.CancelFunc, ios *iostreams.IOStreams, eo *agentclient.ExecOptions) (stop func()) {
	sigs, stopSigs := notify(ctx, 4, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	forward := make(chan syscall.Signal, 4)
	eo.Signals = forward
	done := make(chan struct{})
	go func() {
		interrupts := 0
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				sig := s.(syscall.Signal)
				if sig == syscall.SIGINT {
					interrupts++
					switch interrupts {
					case 2:
						fmt.Fprintln(ios.ErrOut, "cowork: interrupted again; killing the guest process")
						sig = syscall.SIGKILL
					case 3:
						cancel()
						return
					}
				}
				select {
				case forward <- sig:
				default:
				}
			}
		}
	}()
	return func() {
		stopSigs()
		close(done)
	}
}

func orWriter(w, def io.Writer) io.Writer {
	if w == nil {
		return def
	}
	return w
}

// startError explains why the process did not run, with the exit code a
// shell would give: 127 when the program does not exist.
func startError(err error) error {
	var lost *agentclient.LostError
	if errors.As(err, &lost) || errors.As(err, new(*cowork.SessionError)) { // not the guest's
		return err
	}
	msg := agentclient.Message(err)
	if agentclient.IsNotFound(err) {
		return &cmdutil.ExitError{Code: 127, Msg: msg}
	}
	if strings.HasPrefix(msg, "working directory") {
		msg += "; choose another with --workdir"
	}
	return fmt.Errorf("guest: %s", msg)
}
