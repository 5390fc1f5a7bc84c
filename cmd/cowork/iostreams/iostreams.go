// Package iostreams is the CLI's stdin, stdout and stderr, with what it
// needs to know about them (terminal or not, colour, size), so commands can
// be tested against buffers or a pseudo-terminal instead of the real ones.
package iostreams

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"
)

// IOStreams is what a command reads and writes.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer

	inFd, outFd, errFd int // -1 when not a file
	// stdinTTY, when set, overrides what inFd says (SetStdinTTY).
	stdinTTY *bool
}

// System is the process's own stdio.
func System() *IOStreams { return FromFiles(os.Stdin, os.Stdout, os.Stderr) }

// FromFiles wraps files, terminals or not (tests pass a pseudo-terminal).
func FromFiles(in, out, errOut *os.File) *IOStreams {
	return &IOStreams{In: in, Out: out, ErrOut: errOut, inFd: int(in.Fd()), outFd: int(out.Fd()), errFd: int(errOut.Fd())}
}

// Test returns streams on buffers, none of them a terminal.
func Test() (s *IOStreams, in, out, errOut *bytes.Buffer) {
	in, out, errOut = &bytes.Buffer{}, &bytes.Buffer{}, &bytes.Buffer{}
	return Writers(in, out, errOut), in, out, errOut
}

// Writers returns streams on plain readers and writers, none of them a
// terminal: a command's output taken elsewhere (one task of a fleet,
// its lines tagged or kept in a file).
func Writers(in io.Reader, out, errOut io.Writer) *IOStreams {
	return &IOStreams{In: in, Out: out, ErrOut: errOut, inFd: -1, outFd: -1, errFd: -1}
}

func isTerminal(fd int) bool { return fd >= 0 && term.IsTerminal(fd) }

// IsStdinNull reports whether stdin is the null device (`cmd </dev/null`,
// or a parent that gave no stdin): there is nothing to forward, so a
// guest command gets its own /dev/null and no goroutine waits on a read
// that can only say EOF.
func (s *IOStreams) IsStdinNull() bool {
	f, ok := s.In.(*os.File)
	if !ok || s.inFd < 0 {
		return false
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err == nil && os.SameFile(st, null)
}

// IsStdinTTY reports whether stdin is a terminal.
func (s *IOStreams) IsStdinTTY() bool {
	if s.stdinTTY != nil {
		return *s.stdinTTY
	}
	return isTerminal(s.inFd)
}

// SetStdinTTY makes IsStdinTTY report tty whatever stdin is: tests play a
// person at a terminal with it, typing into In.
func (s *IOStreams) SetStdinTTY(tty bool) { s.stdinTTY = &tty }

// IsStdoutTTY reports whether stdout is a terminal.
func (s *IOStreams) IsStdoutTTY() bool { return isTerminal(s.outFd) }

// IsStderrTTY reports whether stderr is a terminal.
func (s *IOStreams) IsStderrTTY() bool { return isTerminal(s.errFd) }

// ColorEnabled says whether stderr may carry colour: a terminal, and
// neither NO_COLOR nor TERM=dumb.
func (s *IOStreams) ColorEnabled() bool {
	_, noColor := os.LookupEnv("NO_COLOR")
	return s.IsStderrTTY() && !noColor && os.Getenv("TERM") != "dumb"
}

// ColorStdout says whether stdout may carry colour: a terminal, and
// neither NO_COLOR nor TERM=dumb.
func (s *IOStreams) ColorStdout() bool {
	_, noColor := os.LookupEnv("NO_COLOR")
	return s.IsStdoutTTY() && !noColor && os.Getenv("TERM") != "dumb"
}

// TerminalSize is the size of the terminal on stdin (or stdout).
func (s *IOStreams) TerminalSize() (rows, cols int, err error) {
	fd := s.inFd
	if !isTerminal(fd) {
		fd = s.outFd
	}
	cols, rows, err = term.GetSize(fd)
	return rows, cols, err
}

// MakeRaw puts the terminal on stdin in raw mode, so that every key reaches
// the guest, and returns the function that restores it. Call the restore on
// every way out.
func (s *IOStreams) MakeRaw() (restore func(), err error) {
	st, err := term.MakeRaw(s.inFd)
	if err != nil {
		return nil, err
	}
	return func() { _ = term.Restore(s.inFd, st) }, nil
}

// maxSecret bounds what ReadSecret reads (netstack's bound on a value).
const maxSecret = 16 << 10

// ReadSecret reads a secret: from a terminal after prompt (on ErrOut),
// without echo, the echo back even when an interrupt ends the program;
// else all of In, its last line break dropped.
func (s *IOStreams) ReadSecret(prompt string) (string, error) {
	if s.IsStdinTTY() && s.inFd >= 0 {
		fmt.Fprint(s.ErrOut, prompt)
		if state, err := term.GetState(s.inFd); err == nil {
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			done := make(chan struct{})
			defer func() { signal.Stop(sigs); close(done) }()
			go func() {
				select {
				case <-sigs:
					_ = term.Restore(s.inFd, state)
					fmt.Fprintln(s.ErrOut)
					os.Exit(130)
				case <-done:
				}
			}()
		}
		b, err := term.ReadPassword(s.inFd)
		fmt.Fprintln(s.ErrOut)
		return string(b), err
	}
	b, err := io.ReadAll(io.LimitReader(s.In, maxSecret+3)) // its line break too
	if err != nil {
		return "", err
	}
	v := strings.TrimSuffix(string(b), "\n")
	v = strings.TrimSuffix(v, "\r")
	if len(v) > maxSecret {
		return "", fmt.Errorf("the value on stdin is over %d KiB", maxSecret>>10)
	}
	return v, nil
}
