package guestagent

import (
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coworkhq/cowork/guestagent/agentpb"
)

// chunkSize is the most output one message carries. Output is read only as
// fast as the client takes it (gRPC flow control), so memory stays bounded
// by a few chunks per process however much the process writes.
const chunkSize = 256 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// defaultPipeSize is what Linux gives a pipe: a read of that much means the
// pipe was full.
const defaultPipeSize = 64 << 10

// stdinQueue is how many stdin chunks may wait for a process that is not
// reading; past that the agent stops reading the stream, and flow control
// holds the client back.
const stdinQueue = 16

// drainTimeout is how long the output pipes may sit idle after the process
// exited, held open by children that inherited them. Past it the exit is
// sent and the stragglers lose their output, as with ssh's "exit". What the
// process itself wrote is never cut off, however slowly the client reads.
const drainTimeout = 250 * time.Millisecond

// drainBudget bounds what the pipes can have held when the process exited
// (two pipes grown to 1 MiB, and a chunk in each pump): read past it, the
// output comes from stragglers, who then get drainTimeout and no more.
const drainBudget = 4 << 20

// Exec runs one process for the length of the stream.
func (s *Server) Exec(stream agentpb.Agent_ExecServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "an exec must begin with start")
	}
	spec, err := resolveSpec(start, s.opts.DefaultUser, s.accounts)
	if err != nil {
		s.log.Warn("exec refused", "user", start.GetUser(), "argv0", argv0(start.GetArgv()), "err", status.Convert(err).Message())
		return err
	}
	began := time.Now()
	p, err := startProcess(spec)
	if err != nil {
		s.log.Warn("exec failed", "user", spec.user.name, "argv0", spec.argv[0], "err", err)
		return status.Errorf(codes.FailedPrecondition, "start %s: %v", spec.argv[0], err)
	}
	done := s.track()
	defer done()

	sess := &session{stream: stream, proc: p, grace: s.opts.KillGrace}
	exit := sess.run()
	s.log.Info("exec", "user", spec.user.name, "argv0", spec.argv[0], "pid", p.cmd.Process.Pid,
		"exit", exitText(exit), "duration", time.Since(began).Round(time.Millisecond))
	if exit == nil {
		return status.Error(codes.Canceled, "client went away; process killed")
	}
	// The exit is sent last, after the log line, so that it and the
	// stream's status leave in one write and wake the client once.
	_ = sess.send(&agentpb.ExecResponse{Msg: &agentpb.ExecResponse_Exit{Exit: exit}})
	return nil
}

// session pumps one process's stdio over one Exec stream.
type session struct {
	stream agentpb.Agent_ExecServer
	proc   *process
	grace  time.Duration

	sendMu sync.Mutex // gRPC allows one sender at a time

	gone   atomic.Bool // the client went away
	exited atomic.Bool // the process exited
	// reading is, per output pump (stdout, stderr), when its pending Read
	// began (unix nanoseconds), 0 while it sends, -1 once it ended.
	reading   [2]atomic.Int64
	afterExit atomic.Int64 // bytes read once the process had exited
	// pumping counts the output pumps still running; the last one to end
	// closes pumped, which drain and run wait on without a goroutine of
	// their own between them and the pumps.
	pumping    atomic.Int32
	pumped     chan struct{}
	hangUpOnce sync.Once
	killed     chan struct{} // closed after the SIGKILL, once hangUp ran
}

func (s *session) send(m *agentpb.ExecResponse) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(m)
}

// run drives the process to its end and returns its exit, for the caller
// to send, or nil when the client went away first (the process tree is
// then killed). It waits for the process itself rather than in another
// goroutine: every handoff between goroutines costs a wakeup on the exec's
// critical path.
func (s *session) run() *agentpb.Exit {
	p := s.proc
	s.reading[0].Store(-1)
	s.reading[1].Store(-1)
	s.pumped = make(chan struct{})
	if s.send(&agentpb.ExecResponse{Msg: &agentpb.ExecResponse_Started{Started: &agentpb.Started{Pid: int32(p.cmd.Process.Pid)}}}) != nil {
		close(s.pumped)
		s.hangUp()
	} else {
		s.pumping.Store(1)
		if p.stderr != nil {
			s.pumping.Store(2)
		}
		s.reading[0].Store(0)
		go s.pump(p.stdout, false, p.pty == nil)
		if p.stderr != nil {
			s.reading[1].Store(0)
			go s.pump(p.stderr, true, true)
		}
		// A process without stdin gets no writer: readRequests drops
		// what stdin comes (a nil channel), and one goroutine fewer starts.
		var stdin chan []byte
		if p.stdin != nil {
			stdin = make(chan []byte, stdinQueue)
			go s.writeStdin(stdin)
		}
		go s.readRequests(stdin)
	}

	p.wait()
	s.exited.Store(true)
	if !s.gone.Load() {
		s.drain()
	}
	p.closeOutputs()
	<-s.pumped
	if s.gone.Load() {
		s.finishKill()
		return nil
	}
	return exitStatus(p.cmd.ProcessState)
}

// hangUp starts ending the whole session after the client went away:
// SIGHUP now, as a hung-up terminal would, and SIGKILL for whatever is
// left after the grace period.
func (s *session) hangUp() {
	if s.exited.Load() {
		return // the stream ended because the process did; leave its background children be
	}
	s.hangUpOnce.Do(func() {
		// killed exists before gone says so: run, which waits on it once
		// it sees gone, may see it as soon as the SIGHUP has ended the
		// process, before this goroutine goes on.
		s.killed = make(chan struct{})
		s.gone.Store(true)
		s.proc.killSession(syscall.SIGHUP)
		time.AfterFunc(s.grace, func() {
			s.proc.killSession(syscall.SIGKILL)
			close(s.killed)
		})
	})
}

// finishKill returns once nothing of the session is left: at once when
// SIGHUP ended it all, else after the grace period's SIGKILL.
func (s *session) finishKill() {
	if len(sessionMembers(s.proc.cmd.Process.Pid)) == 0 {
		return
	}
	<-s.killed
}

// pump copies one output stream to the client, a chunk at a time; Send
// blocks while the client is behind, and so does the process writing. A
// pipe that fills up (a process with a lot to say) is grown, so that the
// process writes on while the agent sends; small outputs never pay for it.
// drain waits, once the process exited, for the pumps to send what its
// pipes still hold. Pipes that background children keep open are closed
// once both pumps have waited drainTimeout for data, or once the
// stragglers have written more than drainBudget.
func (s *session) drain() {
	select {
	case <-s.pumped: // the usual case: the pipes ended with the process
		return
	default:
	}
	exited := time.Now()
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	for {
		select {
		case <-s.pumped:
			return
		case now := <-timer.C:
			flood := s.afterExit.Load() > drainBudget && now.Sub(exited) >= drainTimeout
			if flood || s.pumpsIdle(now, drainTimeout) {
				s.proc.closeOutputs()
				<-s.pumped
				return
			}
			timer.Reset(drainTimeout / 5)
		}
	}
}

// pumpsIdle tells whether every pump has ended or has waited at least d
// for its next read.
func (s *session) pumpsIdle(now time.Time, d time.Duration) bool {
	for i := range s.reading {
		since := s.reading[i].Load()
		if since == 0 || since > 0 && now.Sub(time.Unix(0, since)) < d {
			return false
		}
	}
	return true
}

func (s *session) pump(r *os.File, stderr, pipe bool) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := *bp
	slot := &s.reading[0]
	if stderr {
		slot = &s.reading[1]
	}
	defer func() {
		slot.Store(-1)
		if s.pumping.Add(-1) == 0 {
			close(s.pumped)
		}
	}()
	for {
		slot.Store(time.Now().UnixNano())
		n, err := r.Read(buf)
		slot.Store(0)
		if s.exited.Load() {
			s.afterExit.Add(int64(n))
		}
		if pipe && n >= defaultPipeSize {
			growPipe(r)
			pipe = false
		}
		if n > 0 {
			m := &agentpb.ExecResponse{Msg: &agentpb.ExecResponse_Stdout{Stdout: buf[:n]}}
			if stderr {
				m.Msg = &agentpb.ExecResponse_Stderr{Stderr: buf[:n]}
			}
			if s.send(m) != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readRequests applies the client's messages until the stream ends. A clean
// half-close counts as end of stdin, and the client, which has nothing more
// to say, is still watched for going away; any other end means it is gone.
func (s *session) readRequests(stdin chan<- []byte) {
	closeStdin := sync.OnceFunc(func() {
		if stdin != nil {
			close(stdin)
		}
	})
	defer closeStdin()
	for {
		req, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			closeStdin()
			<-s.stream.Context().Done() // cancelled by the client, or once Exec returns
			s.hangUp()
			return
		}
		if err != nil {
			s.hangUp()
			return
		}
		switch m := req.Msg.(type) {
		case *agentpb.ExecRequest_Stdin:
			if len(m.Stdin) > 0 && stdin != nil {
				stdin <- m.Stdin
			}
		case *agentpb.ExecRequest_CloseStdin:
			closeStdin()
		case *agentpb.ExecRequest_Signal:
			_ = s.proc.signal(syscall.Signal(m.Signal.GetNumber()))
		case *agentpb.ExecRequest_Resize:
			_ = s.proc.resize(m.Resize)
		}
		// A second start, or a message of a newer client, is ignored.
	}
}

// writeStdin feeds the process's input, then closes it. After a write fails
// (the process closed its stdin) the rest is read and dropped so that the
// stream keeps moving.
func (s *session) writeStdin(chunks <-chan []byte) {
	var failed bool
	for c := range chunks {
		if failed {
			continue
		}
		if _, err := s.proc.stdin.Write(c); err != nil {
			failed = true
		}
	}
	if !failed {
		_ = s.proc.closeStdin()
	}
}

func argv0(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return argv[0]
}

func exitText(e *agentpb.Exit) string {
	switch {
	case e == nil:
		return "killed (client gone)"
	case e.Signal != "":
		return e.Signal
	default:
		return strconv.Itoa(int(e.Code))
	}
}
