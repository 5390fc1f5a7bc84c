package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coworkhq/cowork/guestagent/agentpb"
)

// stdinChunk is the most stdin one message carries, well under the agent's
// message limit.
const stdinChunk = 32 << 10

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
}

// ExitStatus is how the process ended, as a shell reports it.
type ExitStatus struct {
	Code   int    // exit code, or 128+N when signal N killed the process
	Signal string // e.g. "SIGKILL" when a signal killed the process
}

// Exec runs a process in the guest and streams its stdio until it exits.
// The error is non-nil only when the process could not be started or the
// connection failed; a failing process is a normal ExitStatus. Cancelling
// ctx ends the stream, and the agent kills the process tree.
func (c *Client) Exec(ctx context.Context, o ExecOptions) (ExitStatus, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Exec(ctx)
	if err != nil {
		return ExitStatus{}, err
	}
	s := &execStream{stream: stream}
	start := &agentpb.ExecStart{Argv: o.Argv, Env: o.Env, Cwd: o.Dir, User: o.User, NoStdin: o.Stdin == nil && o.TTY == nil}
	if o.TTY != nil {
		start.Tty = &agentpb.TerminalSize{Rows: uint32(o.TTY.Rows), Cols: uint32(o.TTY.Cols)}
	}
	// A send fails with io.EOF once the agent ended the stream (a refused
	// start, or a process that already exited); Recv then says how it ended.
	if err := s.send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: start}}); err != nil && !errors.Is(err, io.EOF) {
		return ExitStatus{}, err
	}
	if o.Stdin == nil && o.TTY != nil {
		// Said now, it travels with the start instead of after it.
		if err := s.send(closeStdin); err != nil && !errors.Is(err, io.EOF) {
			return ExitStatus{}, err
		}
	}
	if o.Stdin == nil && o.Resize == nil && o.Signals == nil {
		// Nothing more will be sent: half-closing lets the agent end the
		// stream cleanly when the process exits, where a stream left open
		// would be reset by the cancel below, a frame more on each side.
		// The agent still kills the process if ctx ends first.
		_ = stream.CloseSend()
	}
	first, err := stream.Recv()
	if err != nil {
		return ExitStatus{}, err
	}
	started := first.GetStarted()
	if started == nil {
		return ExitStatus{}, errors.New("agent answered start with something other than started")
	}
	if o.Started != nil {
		o.Started(int(started.Pid))
	}

	if o.Stdin != nil {
		go s.copyStdin(ctx, o.Stdin)
	}
	if o.Resize != nil || o.Signals != nil {
		go s.forwardControl(ctx, o.Resize, o.Signals)
	}

	stdout, stderr := orDiscard(o.Stdout), orDiscard(o.Stderr)
	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Unavailable || status.Code(err) == codes.Internal && ctx.Err() == nil {
				err = &LostError{err: err}
			}
			return ExitStatus{}, err
		}
		switch m := m.Msg.(type) {
		case *agentpb.ExecResponse_Stdout:
			if _, err := stdout.Write(m.Stdout); err != nil {
				return ExitStatus{}, fmt.Errorf("write stdout: %w", err)
			}
		case *agentpb.ExecResponse_Stderr:
			if _, err := stderr.Write(m.Stderr); err != nil {
				return ExitStatus{}, fmt.Errorf("write stderr: %w", err)
			}
		case *agentpb.ExecResponse_Exit:
			return ExitStatus{Code: int(m.Exit.Code), Signal: m.Exit.Signal}, nil
		}
	}
}

// execStream serializes sends: gRPC allows one sender at a time, and stdin,
// resizes and signals come from different goroutines.
type execStream struct {
	stream agentpb.Agent_ExecClient
	mu     sync.Mutex
}

func (s *execStream) send(m *agentpb.ExecRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

var closeStdin = &agentpb.ExecRequest{Msg: &agentpb.ExecRequest_CloseStdin{CloseStdin: &agentpb.CloseStdin{}}}

func (s *execStream) copyStdin(ctx context.Context, in io.Reader) {
	buf := make([]byte, stdinChunk)
	for ctx.Err() == nil {
		n, err := in.Read(buf)
		if n > 0 {
			if s.send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: buf[:n]}}) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	_ = s.send(closeStdin)
}

func (s *execStream) forwardControl(ctx context.Context, resize <-chan TerminalSize, signals <-chan syscall.Signal) {
	for {
		var m *agentpb.ExecRequest
		select {
		case <-ctx.Done():
			return
		case sz, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			m = &agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Resize{Resize: &agentpb.TerminalSize{Rows: uint32(sz.Rows), Cols: uint32(sz.Cols)}}}
		case sig, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			m = &agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Signal{Signal: &agentpb.Signal{Number: int32(sig)}}}
		}
		if s.send(m) != nil {
			return
		}
	}
}

// LostError is a connection to the agent that broke while a process ran:
// the agent exited or restarted, or the VM stopped.
type LostError struct{ err error }

func (e *LostError) Error() string {
	return "lost the connection to the guest agent while the command ran (the agent restarted, or the VM stopped): " + Message(e.err)
}

func (e *LostError) Unwrap() error { return e.err }

// IsNotFound reports whether err says the program to run does not exist.
func IsNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// Message is err's text without gRPC's "rpc error: code = ... desc =" frame.
func Message(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
