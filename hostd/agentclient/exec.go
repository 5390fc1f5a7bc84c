package agentclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/internal/execwire"
)

// stdinChunk is the most stdin one frame carries.
const stdinChunk = execwire.MaxStdin

// startedTimeout bounds the wait for the agent's answer to a start. The
// agent answers at once (it forks and says so), but a busy emulated guest
// can hold a new channel's first frames for tens of seconds; an agent that
// never answers is an error, not a hang.
var startedTimeout = 2 * time.Minute

// agentLimits bounds every frame the agent may send.
var agentLimits = (&execwire.Limits{}).
	Allow(execwire.Started, 4).
	Allow(execwire.Stdout, execwire.MaxOutput).
	Allow(execwire.Stderr, execwire.MaxOutput).
	Allow(execwire.Exit, execwire.MaxExit)

// outPool holds the buffers output frames are read into before they are
// written to the caller's writers.
var outPool = sync.Pool{New: func() any { b := make([]byte, execwire.MaxOutput); return &b }}

// TerminalSize is a terminal's size in character cells.
type TerminalSize struct{ Rows, Cols uint16 }

// ExecOptions describes one process to run in the guest.
type ExecOptions struct {
	Argv []string
	Env  []string // KEY=VALUE, laid over the guest's login environment
	Dir  string   // empty: the user's home
	User string   // empty: the agent's default user

	// TTY, when set, runs the process on a pseudo-terminal of that size;
	// its output then all arrives on Stdout.
	TTY *TerminalSize

	// Stdin is copied to the process and then closed; nil means empty
	// input. A Read that never returns keeps only its goroutine alive.
	Stdin  io.Reader
	Stdout io.Writer // nil discards
	Stderr io.Writer // nil discards

	Resize  <-chan TerminalSize   // new sizes for the process's terminal
	Signals <-chan syscall.Signal // signals for the process's foreground group

	// Started, if set, is called with the guest pid once the process runs.
	Started func(pid int)
	// EndSession ends what the process left running when it exits
	// (execwire.StartMsg.EndSession): a task's tools go with the task.
	EndSession bool
	// ExecID names the exec in the guest and in the audit log's owners
	// (execwire.StartMsg.ExecID, from NewExecID); empty lets the agent pick
	// one the caller does not learn.
	ExecID string
}

// NewExecID is a fresh exec id.
func NewExecID() string {
	var b [execwire.ExecIDLen / 2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ExitStatus is how the process ended, as a shell reports it.
type ExitStatus struct {
	Code   int    // exit code, or 128+N when signal N killed the process
	Signal string // e.g. "SIGKILL" when a signal killed the process
}

// Exec runs a process in the guest and streams its stdio until it exits.
// The error is non-nil only when the process could not be started (an
// *ExecError) or the connection failed; a failing process is a normal
// ExitStatus. Cancelling ctx ends the exec, and the agent kills the
// process tree.
func (c *Client) Exec(ctx context.Context, o ExecOptions) (ExitStatus, error) {
	for {
		cn, reused, err := c.get(ctx)
		if err != nil {
			return ExitStatus{}, err
		}
		x := &execution{conn: cn, o: &o, done: make(chan struct{})}
		st, err := x.run(ctx)
		c.put(cn, err == nil)
		// An idle connection the agent closed meanwhile (it restarted)
		// fails before any answer: nothing ran, and a new one is tried.
		if err != nil && reused && !x.answered && ctx.Err() == nil && isClosedByPeer(err) && !c.isClosed() {
			continue
		}
		if err != nil && c.isClosed() && ctx.Err() == nil {
			err = fmt.Errorf("exec %s: %w", argv0(o.Argv), errClosed)
		}
		return st, err
	}
}

// execution is one Exec on one connection.
type execution struct {
	conn     *conn
	o        *ExecOptions
	answered bool // a frame of the agent's arrived

	// mu orders the frames of the goroutines that send (Exec itself,
	// stdin, control); finished, once the exit arrived, stops them, so that
	// the connection carries nothing of this exec into the next.
	mu       sync.Mutex
	finished bool
	done     chan struct{} // closed with finished
}

// send writes whole frames, unless the exec finished.
func (x *execution) send(b []byte) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.finished {
		return errClosed
	}
	_, err := x.conn.c.Write(b)
	return err
}

func (x *execution) finish() {
	x.mu.Lock()
	if !x.finished {
		x.finished = true
		close(x.done)
	}
	x.mu.Unlock()
}

func (x *execution) run(ctx context.Context) (st ExitStatus, err error) {
	o := x.o
	start := execwire.StartMsg{Argv: o.Argv, Env: o.Env, Cwd: o.Dir, User: o.User, NoStdin: o.Stdin == nil && o.TTY == nil, EndSession: o.EndSession, ExecID: o.ExecID}
	if o.TTY != nil {
		start.TTY = &execwire.TerminalSize{Rows: uint32(o.TTY.Rows), Cols: uint32(o.TTY.Cols)}
	}
	var b []byte
	if !x.conn.prefaced {
		b = append(b, execwire.Preface...)
	}
	b = execwire.AppendStart(b, &start)
	if o.Stdin == nil && o.TTY != nil {
		// Said now, it travels with the start instead of after it.
		b = execwire.AppendHeader(b, execwire.CloseStdin, 0)
	}

	// Cancelling ctx closes the connection: the agent hangs up the process,
	// and the reads below end.
	stop := context.AfterFunc(ctx, func() { x.conn.c.Close() })
	defer func() {
		x.finish()
		if !stop() && err == nil {
			// The exit and the cancel crossed: the connection is closed.
			err = ctx.Err()
		}
		if err != nil && ctx.Err() != nil {
			err = ctx.Err()
		}
	}()
	if err := x.send(b); err != nil {
		return ExitStatus{}, err
	}
	x.conn.prefaced = true

	if err := x.awaitStarted(); err != nil {
		return ExitStatus{}, err
	}
	if o.Stdin != nil {
		go x.copyStdin(ctx, o.Stdin)
	}
	if o.Resize != nil || o.Signals != nil {
		go x.forwardControl(ctx, o.Resize, o.Signals)
	}
	return x.output()
}

// awaitStarted reads the agent's answer to the start: started, or an exit
// that says why nothing ran.
func (x *execution) awaitStarted() error {
	timedOut := false
	timer := time.AfterFunc(startedTimeout, func() {
		x.mu.Lock()
		timedOut = true
		x.mu.Unlock()
		x.conn.c.Close()
	})
	t, p, err := x.readControl()
	if !timer.Stop() {
		x.mu.Lock()
		late := timedOut
		x.mu.Unlock()
		if late {
			return fmt.Errorf("the guest agent did not answer the start of %s within %v: %w", argv0(x.o.Argv), startedTimeout, errNoAnswer)
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the guest agent closed the connection before it started %s: %w", argv0(x.o.Argv), err)
		}
		return err
	}
	switch t {
	case execwire.Started:
		v, err := execwire.Uint32s(p, 1)
		if err != nil {
			return protocolErr("started: %v", err)
		}
		if x.o.Started != nil {
			x.o.Started(int(v[0]))
		}
		return nil
	case execwire.Exit:
		m, err := decodeExit(p)
		if err != nil {
			return err
		}
		if m.Error == "" {
			return protocolErr("an exit before started that gives no reason")
		}
		return newExecError(m)
	}
	return protocolErr("%s before started", t)
}

var errNoAnswer = errors.New("no answer")

// readControl reads the next frame, which the caller expects to be small
// (started or exit): output frames are refused here.
func (x *execution) readControl() (execwire.Type, []byte, error) {
	t, n, err := x.conn.r.Next()
	if err != nil {
		return t, nil, readErr(err)
	}
	x.answered = true
	if t == execwire.Stdout || t == execwire.Stderr {
		return t, nil, nil
	}
	p, err := x.conn.r.ReadPayload(make([]byte, n), n)
	return t, p, readErr(err)
}

// output copies the process's output to the caller's writers until its
// exit arrives.
func (x *execution) output() (ExitStatus, error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			outPool.Put(bp)
		}
	}()
	stdout, stderr := orDiscard(x.o.Stdout), orDiscard(x.o.Stderr)
	for {
		t, n, err := x.conn.r.Next()
		if err != nil {
			return ExitStatus{}, lost(readErr(err))
		}
		switch t {
		case execwire.Stdout, execwire.Stderr:
			if bp == nil {
				bp = outPool.Get().(*[]byte)
			}
			p, err := x.conn.r.ReadPayload(*bp, n)
			if err != nil {
				return ExitStatus{}, lost(readErr(err))
			}
			w, name := stdout, "stdout"
			if t == execwire.Stderr {
				w, name = stderr, "stderr"
			}
			if _, err := w.Write(p); err != nil {
				return ExitStatus{}, fmt.Errorf("write %s: %w", name, err)
			}
		case execwire.Exit:
			p, err := x.conn.r.ReadPayload(make([]byte, n), n)
			if err != nil {
				return ExitStatus{}, lost(readErr(err))
			}
			m, err := decodeExit(p)
			if err != nil {
				return ExitStatus{}, err
			}
			if m.Error != "" {
				return ExitStatus{}, protocolErr("an exit with an error after started")
			}
			return ExitStatus{Code: m.Code, Signal: m.Signal}, nil
		default: // started: the limits refuse every other type
			return ExitStatus{}, protocolErr("a second %s", t)
		}
	}
}

// decodeExit parses an exit frame and checks what a shell would show of it.
func decodeExit(p []byte) (*execwire.ExitMsg, error) {
	m, err := execwire.ParseExit(p)
	if err != nil {
		return nil, protocolErr("exit: %v", err)
	}
	if m.Error == "" && (m.Code < 0 || m.Code > 255) {
		return nil, protocolErr("exit code %d is outside 0-255", m.Code)
	}
	if !signalName(m.Signal) {
		return nil, protocolErr("exit signal %q is no signal name", m.Signal)
	}
	return &m, nil
}

// signalName accepts "" and names like SIGKILL or SIGRTMIN+3.
func signalName(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > 16 || len(s) < 4 || s[:3] != "SIG" {
		return false
	}
	for _, c := range s[3:] {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

// readErr turns a frame reader's refusal into a ProtocolError, and a
// stream cut inside a frame into io.ErrUnexpectedEOF.
func readErr(err error) error {
	var fe *execwire.FrameError
	if errors.As(err, &fe) {
		return protocolErr("%v", fe)
	}
	return err
}

// lost marks a connection that ended or broke while the process ran.
func lost(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return err
	}
	return &LostError{err: err}
}

// isClosedByPeer reports an error that means the agent closed the
// connection (as it does when it restarts).
func isClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (x *execution) copyStdin(ctx context.Context, in io.Reader) {
	bp := outPool.Get().(*[]byte) // MaxOutput holds a stdin frame
	defer outPool.Put(bp)
	frame := (*bp)[:execwire.HeaderSize+stdinChunk]
	buf := frame[execwire.HeaderSize:]
	for ctx.Err() == nil {
		n, err := in.Read(buf)
		if n > 0 {
			execwire.PutHeader(frame, execwire.Stdin, n)
			if x.send(frame[:execwire.HeaderSize+n]) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	_ = x.send(execwire.AppendHeader(nil, execwire.CloseStdin, 0))
}

func (x *execution) forwardControl(ctx context.Context, resize <-chan TerminalSize, signals <-chan syscall.Signal) {
	var b [execwire.HeaderSize + 8]byte
	for {
		var m []byte
		select {
		case <-ctx.Done():
			return
		case <-x.done:
			return
		case sz, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			m = execwire.AppendUint32s(b[:0], execwire.Resize, uint32(sz.Rows), uint32(sz.Cols))
		case sig, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			m = execwire.AppendUint32s(b[:0], execwire.Signal, uint32(sig))
		}
		if x.send(m) != nil {
			return
		}
	}
}

func argv0(argv []string) string {
	if len(argv) == 0 {
		return "(no program)"
	}
	return argv[0]
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
