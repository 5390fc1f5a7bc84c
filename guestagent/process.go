package guestagent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/internal/execwire"
)

// process is one started child: its stdin, its output streams and a way to
// signal everything it started.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // the pipe, or the pty master; nil with no stdin
	stdout *os.File       // the pipe, or the pty master
	stderr *os.File       // nil with a tty
	pty    *os.File       // non-nil with a tty
	// exited becomes readable when the process ends (a pidfd in the
	// runtime's poller); nil where the kernel has no pidfds.
	exited *os.File
}

// devNull is the input of every process started without stdin, opened
// once: each child gets its own copy of the descriptor and nothing ever
// reads from the agent's, so one open file serves them all and spares
// each exec an open and a close.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// startProcess launches spec in a new session, so that its whole tree can be
// signalled, with pipes or a pseudo-terminal for its stdio.
func startProcess(spec *procSpec) (*process, error) {
	cmd := &exec.Cmd{Path: spec.path, Args: spec.argv, Env: spec.env, Dir: spec.dir}
	pidfd := -1
	attrs := &syscall.SysProcAttr{Setsid: true, Credential: spec.user.credential()}
	askPidfd(attrs, &pidfd)
	if spec.tty != nil {
		attrs.Setctty = true
		master, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: uint16(spec.tty.Rows), Cols: uint16(spec.tty.Cols)}, attrs)
		if err != nil {
			return nil, err
		}
		m, err := pollable(master)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if pidfd >= 0 {
				unix.Close(pidfd)
			}
			return nil, err
		}
		return &process{cmd: cmd, stdin: m, stdout: m, pty: m, exited: exitNotifier(pidfd)}, nil
	}
	cmd.SysProcAttr = attrs

	var parent, child []*os.File // our ends, the child's ends
	closeAll := func(fs []*os.File) {
		null, _ := devNull() // shared, never closed
		for _, f := range fs {
			if f != nil && f != null {
				f.Close()
			}
		}
	}
	for i := range 3 {
		if i == 0 && spec.noStdin {
			null, err := devNull()
			if err != nil {
				return nil, err
			}
			parent, child = append(parent, nil), append(child, null)
			continue
		}
		ours, theirs, err := childPipe(i > 0) // the child reads stdin, writes the rest
		if err != nil {
			closeAll(parent)
			closeAll(child)
			return nil, err
		}
		parent, child = append(parent, ours), append(child, theirs)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child[0], child[1], child[2]
	err := cmd.Start()
	closeAll(child)
	if err != nil {
		closeAll(parent)
		return nil, err
	}
	p := &process{cmd: cmd, stdout: parent[1], stderr: parent[2], exited: exitNotifier(pidfd)}
	if parent[0] != nil {
		p.stdin = parent[0]
	}
	return p, nil
}

// closeStdin ends the process's input: the pipe closes, or a terminal gets
// the EOF character as if the user pressed Ctrl-D.
// exitNotifier puts the child's pidfd into the runtime's poller, so that
// waiting for the exit parks a goroutine instead of a thread: the exit then
// arrives in the same poll as the EOF of the child's pipes, rather than as
// a second thread waking up on another CPU.
func exitNotifier(pidfd int) *os.File {
	if pidfd < 0 {
		return nil
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return nil
	}
	return os.NewFile(uintptr(pidfd), "pidfd")
}

// wait returns once the process has exited and been reaped.
func (p *process) wait() {
	if p.exited != nil {
		if rc, err := p.exited.SyscallConn(); err == nil {
			// Read parks until the pidfd is readable, asking each time
			// whether the process has exited: the poller's readiness alone
			// can be lost if it came before the wait began. An fd the poller
			// cannot take fails the Read at once, and Wait blocks instead.
			_ = rc.Read(hasExited)
		}
		p.exited.Close()
	}
	_ = p.cmd.Wait()
}

func (p *process) closeStdin() error {
	if p.stdin == nil {
		return nil
	}
	if p.pty != nil {
		_, err := p.pty.Write([]byte{4})
		return err
	}
	return p.stdin.Close()
}

func (p *process) resize(sz *execwire.TerminalSize) error {
	if p.pty == nil {
		return errors.New("resize without a terminal")
	}
	if err := checkTerminalSize(sz); err != nil {
		return err
	}
	return ptyControl(p.pty, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(sz.Rows), Col: uint16(sz.Cols)})
	})
}

// pollable replaces the pty master that creack/pty left in blocking mode
// (its ioctls go through File.Fd) with a non-blocking duplicate, so that a
// read waiting on a terminal some background process still holds can be
// ended by Close.
func pollable(master *os.File) (*os.File, error) {
	defer master.Close()
	fd, err := unix.Dup(int(master.Fd()))
	if err != nil {
		return nil, fmt.Errorf("dup pty: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty: %w", err)
	}
	return os.NewFile(uintptr(fd), master.Name()), nil
}

// ptyControl runs fn on the pty's descriptor without File.Fd, which would
// put it back in blocking mode.
func ptyControl(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// signal delivers sig the way a terminal would: to the foreground process
// group of the terminal, or without one to the process group the agent made.
func (p *process) signal(sig syscall.Signal) error {
	if err := checkSignal(int32(sig)); err != nil {
		return err
	}
	pgid := p.cmd.Process.Pid
	if p.pty != nil {
		_ = ptyControl(p.pty, func(fd int) error {
			fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
			if err == nil && fg > 0 {
				pgid = fg
			}
			return err
		})
	}
	return syscall.Kill(-pgid, sig)
}

// killSession sends sig to every process in the session the child leads
// (its process group and any job-control groups a shell made under it)
// and to every process that carries marker (see markedProcesses).
func (p *process) killSession(sig syscall.Signal, marker string) {
	sid := p.cmd.Process.Pid
	_ = syscall.Kill(-sid, sig)
	for _, pid := range sessionMembers(sid) {
		_ = syscall.Kill(pid, sig)
	}
	for _, pid := range markedProcesses(marker) {
		_ = syscall.Kill(pid, sig)
	}
}

// closeOutputs releases the agent's ends of the child's stdio, which also
// unblocks any read still waiting on them.
func (p *process) closeOutputs() {
	p.stdout.Close()
	if p.stderr != nil {
		p.stderr.Close()
	}
	if p.pty == nil && p.stdin != nil {
		p.stdin.Close()
	}
}

// exitStatus turns a wait result into what a shell would report.
func exitStatus(state *os.ProcessState) *execwire.ExitMsg {
	ws, ok := state.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return &execwire.ExitMsg{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return &execwire.ExitMsg{Code: state.ExitCode()}
}

// checkTerminalSize accepts the sizes a real terminal can have.
func checkTerminalSize(sz *execwire.TerminalSize) error {
	if sz.Rows == 0 || sz.Cols == 0 || sz.Rows > maxTermSide || sz.Cols > maxTermSide {
		return fmt.Errorf("bad terminal size %dx%d", sz.Rows, sz.Cols)
	}
	return nil
}

// checkSignal accepts the signal numbers Linux has (1-64).
func checkSignal(n int32) error {
	if n <= 0 || n > 64 {
		return fmt.Errorf("bad signal number %d", n)
	}
	return nil
}

// markerVar names the environment variable that marks an exec's
// processes (procSpec.marker).
const markerVar = "COWORK_EXEC"

// newMarker is a marker no other exec has.
func newMarker() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
