//go:build linux

package guestrun

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
)

// watcher accumulates what a reader produces and waits for substrings.
type watcher struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *watcher) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		ok := strings.Contains(w.buf.String(), s)
		w.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Fatalf("never saw %q; got %q", s, w.buf.String())
}

func termFlags(t *testing.T, f *os.File) uint32 {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag
}

func TestTTYSessionFollowsTheLocalTerminalAndRestoresIt(t *testing.T) {
	a := agenttest.Start(t)
	master, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer tty.Close()
	pty.Setsize(master, &pty.Winsize{Rows: 30, Cols: 100})
	before := termFlags(t, tty)
	if before&unix.ICANON == 0 || before&unix.ECHO == 0 {
		t.Fatal("a fresh pty should start cooked")
	}
	screen := &watcher{}
	go io.Copy(screen, master)

	ios := iostreams.FromFiles(tty, tty, tty)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), ios, a.Client(t), Options{
			Argv: []string{"sh", "-c", "tty; stty size; read x; stty size; exit 5"},
			Dir:  "/",
			TTY:  true,
		})
	}()
	screen.waitFor(t, "30 100")
	if termFlags(t, tty)&(unix.ICANON|unix.ECHO) != 0 {
		t.Error("the local terminal is not in raw mode during the session")
	}
	pty.Setsize(master, &pty.Winsize{Rows: 40, Cols: 120})
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	time.Sleep(200 * time.Millisecond) // the resize travels before the keypress
	master.Write([]byte("\r"))
	screen.waitFor(t, "40 120")

	var exit *cmdutil.ExitError
	if err := <-done; !errors.As(err, &exit) || exit.Code != 5 {
		t.Fatalf("got %v, want exit code 5", err)
	}
	if after := termFlags(t, tty); after != before {
		t.Fatalf("terminal flags %#x after the session, %#x before: not restored", after, before)
	}
	screen.waitFor(t, "/dev/pts/")
}

func TestCtrlCIsForwardedThenKills(t *testing.T) {
	a := agenttest.Start(t)
	run := func(script string, interrupts int) (string, error) {
		ios, _, _, _ := iostreams.Test()
		out := &watcher{}
		ios.Out = out
		// The script loops until a signal ends it: a Ctrl-C that never
		// arrives must fail the test, not hang it. The context ends the
		// guest process; the timer is for a Run that ignores it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		client := a.Client(t)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, ios, client, Options{Argv: []string{"bash", "-c", script}, Dir: "/"})
		}()
		out.waitFor(t, "ready")
		for range interrupts {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			time.Sleep(300 * time.Millisecond)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%d Ctrl-C did not end %q", interrupts, script)
		}
		if ctx.Err() != nil {
			t.Fatalf("%d Ctrl-C did not end %q within a minute (%v)", interrupts, script, err)
		}
		out.mu.Lock()
		defer out.mu.Unlock()
		return out.buf.String(), err
	}
	var exit *cmdutil.ExitError
	out, err := run(`trap 'echo got INT; exit 42' INT; echo ready; while :; do sleep 0.1; done`, 1)
	if !errors.As(err, &exit) || exit.Code != 42 || !strings.Contains(out, "got INT") {
		t.Fatalf("one Ctrl-C: %v %q; want the guest's trap to run and exit 42", err, out)
	}
	_, err = run(`trap '' INT; echo ready; sleep 100`, 2)
	if !errors.As(err, &exit) || exit.Code != 137 {
		t.Fatalf("two Ctrl-Cs: %v; want the guest process killed (137)", err)
	}
}

// Ctrl-Cs its caller held before the run attached (a throwaway's, come
// between its clone's boot and the run) reach the guest process as the
// run starts, as if they came just after: two of them, the second
// killing. The run leaves the caller's channel registered, so that the
// next Ctrl-C, while the clone is discarded, is held too rather than
// fatal.
func TestSignalsHeldBeforeTheRunAreForwarded(t *testing.T) {
	a := agenttest.Start(t)
	held := make(chan os.Signal, 4)
	signal.Notify(held, syscall.SIGINT)
	defer signal.Stop(held)
	held <- syscall.SIGINT // as the kernel would have put them there
	held <- syscall.SIGINT
	ios, _, _, stderr := iostreams.Test()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	err := Run(WithHeldSignals(ctx, held), ios, a.Client(t), Options{Argv: []string{"sleep", "100"}, Dir: "/"})
	var exit *cmdutil.ExitError
	if took := time.Since(began); ctx.Err() != nil || took > 30*time.Second || !errors.As(err, &exit) || (exit.Code != 130 && exit.Code != 137) {
		t.Fatalf("run with two Ctrl-Cs held: %v after %s; want the guest process interrupted at once (exit 130 or 137)", err, took.Round(time.Millisecond))
	}
	if !strings.Contains(stderr.String(), "interrupted again") {
		t.Errorf("stderr %q: the held Ctrl-Cs were not forwarded as Ctrl-Cs", stderr.String())
	}
	syscall.Kill(os.Getpid(), syscall.SIGINT) // fatal were held no longer registered
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the Ctrl-C after the run never reached the caller's channel")
	}
}

// A signal ends a terminal session, with the local terminal restored:
// one its caller held from before the terminal went raw (the guest's
// command then ends at once), and a SIGINT from outside during the
// session, which used to kill cowork with the terminal left raw.
func TestSignalsEndATTYSessionAndRestoreTheTerminal(t *testing.T) {
	a := agenttest.Start(t)
	session := func(ctx context.Context, argv []string, during func(*watcher)) {
		t.Helper()
		master, tty, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer master.Close()
		defer tty.Close()
		before := termFlags(t, tty)
		screen := &watcher{}
		go io.Copy(screen, master)
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, iostreams.FromFiles(tty, tty, tty), a.Client(t), Options{Argv: argv, Dir: "/", TTY: true})
		}()
		during(screen)
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%q: the signal did not end the session", argv)
		}
		var exit *cmdutil.ExitError
		if !errors.As(err, &exit) || exit.Code != 130 {
			t.Errorf("%q: %v, want exit 130", argv, err)
		}
		if after := termFlags(t, tty); after != before {
			t.Errorf("%q: terminal flags %#x after the session, %#x before: not restored", argv, after, before)
		}
	}

	held := make(chan os.Signal, 4)
	signal.Notify(held, syscall.SIGINT)
	defer signal.Stop(held)
	held <- syscall.SIGINT
	session(WithHeldSignals(context.Background(), held), []string{"sleep", "100"}, func(*watcher) {})

	session(context.Background(), []string{"sh", "-c", "echo ready; sleep 100"}, func(screen *watcher) {
		screen.waitFor(t, "ready")
		syscall.Kill(os.Getpid(), syscall.SIGINT) // fatal were it not handled
	})
}

// A local stdin that is /dev/null is not forwarded: the guest process gets
// the guest's own null device, and nothing waits on a local read. Any
// other stdin (here a pipe) is forwarded.
func TestNullStdinIsNotForwarded(t *testing.T) {
	a := agenttest.Start(t)
	stdinOf := func(in *os.File) string {
		t.Helper()
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		ios := iostreams.FromFiles(in, out, os.Stderr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := Run(ctx, ios, a.Client(t), Options{Argv: []string{"readlink", "/proc/self/fd/0"}, Dir: "/"}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out.Name())
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if got := stdinOf(null); got != "/dev/null" {
		t.Errorf("with /dev/null as stdin the guest process's stdin is %q, want /dev/null", got)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer r.Close()
	if got := stdinOf(r); !strings.HasPrefix(got, "pipe:") {
		t.Errorf("with a pipe as stdin the guest process's stdin is %q, want a pipe the agent feeds", got)
	}
}
