package guestagent

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/internal/execwire"
)

// chunkPool holds the output buffers, each a frame header and the most
// output one frame carries. Output is read only as fast as the client
// takes it (the connection's writes block), so memory stays bounded by a
// chunk per pump however much the process writes.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, execwire.HeaderSize+execwire.MaxOutput); return &b }}

// defaultPipeSize is what Linux gives a pipe: a read of that much means the
// pipe was full.
const defaultPipeSize = 64 << 10

// stdinQueue is how many stdin chunks may wait for a process that is not
// reading; past that the agent stops reading the connection, and the
// client's writes wait.
const stdinQueue = 16

// A pump that has read coalesceStreak times in a row, each within
// 2*coalesceWait of the last, is following a stream: before a read that
// would come back small it waits coalesceWait, so that frames carry up to
// a chunk rather than each of the writer's small writes (GNU head writes
// 4 KiB at a time: 280,000 frames a GiB). Output is delayed by at most
// coalesceWait, and only while it streams.
const (
	coalesceStreak = 8
	coalesceWait   = time.Millisecond
)

// drainTimeout is how long the output pipes may sit idle after the process
// exited, held open by children that inherited them. Past it the exit is
// sent and the stragglers lose their output, as with ssh's "exit". What the
// process itself wrote is never cut off, however slowly the client reads.
const drainTimeout = 250 * time.Millisecond

// drainBudget bounds what the pipes can have held when the process exited
// (two pipes grown to 1 MiB, and a chunk in each pump): read past it, the
// output comes from stragglers, who then get drainTimeout and no more.
const drainBudget = 4 << 20

// session pumps one process's stdio over its exec connection.
type session struct {
	conn  *execConn
	proc  *process
	spec  *procSpec
	grace time.Duration
	began time.Time
	done  func() // the Server's count of live sessions

	// stdin queues the host's input for writeStdin; nil without stdin.
	// Only the connection's reader sends on it and closes it.
	stdin       chan stdinChunk
	stdinClosed bool
	// over is closed once the exec is finished, before its exit is sent:
	// the frames of it that still arrive are dropped.
	over chan struct{}

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

func newSession(ec *execConn, p *process, spec *procSpec) *session {
	s := &session{conn: ec, proc: p, spec: spec, grace: ec.s.opts.KillGrace, began: time.Now(),
		over: make(chan struct{}), pumped: make(chan struct{})}
	// A process without stdin gets no writer: what stdin comes is
	// dropped, and one goroutine fewer starts.
	if p.stdin != nil {
		s.stdin = make(chan stdinChunk, stdinQueue)
	}
	return s
}

// isOver reports whether the exec finished (its exit is sent or on its way).
func (s *session) isOver() bool {
	select {
	case <-s.over:
		return true
	default:
		return false
	}
}

// send writes one small frame.
func (s *session) send(b []byte) error { return s.conn.write(b) }

// run drives the process to its end and sends its exit, unless the client
// went away first (the process tree is then killed). It waits for the
// process itself rather than in another goroutine: every handoff between
// goroutines costs a wakeup on the exec's critical path.
func (s *session) run() {
	defer s.done()
	p := s.proc
	s.reading[0].Store(-1)
	s.reading[1].Store(-1)
	var started [execwire.HeaderSize + 4]byte
	if s.send(execwire.AppendUint32s(started[:0], execwire.Started, uint32(p.cmd.Process.Pid))) != nil {
		close(s.pumped)
		s.hangUp()
	} else {
		s.pumping.Store(1)
		if p.stderr != nil {
			s.pumping.Store(2)
		}
		s.reading[0].Store(0)
		go s.pump(p.stdout, execwire.Stdout, p.pty == nil)
		if p.stderr != nil {
			s.reading[1].Store(0)
			go s.pump(p.stderr, execwire.Stderr, true)
		}
		if s.stdin != nil {
			go s.writeStdin()
		}
	}

	p.wait()
	s.exited.Store(true)
	if !s.gone.Load() {
		s.drain()
	}
	p.closeOutputs()
	<-s.pumped
	if s.gone.Load() {
		close(s.over)
		s.finishKill()
		s.logExec(nil)
		return
	}
	exit := exitStatus(p.cmd.ProcessState)
	// over is closed first: once the exit is out the host may send the
	// next start, and the reader must not take it for this exec's.
	close(s.over)
	if b, err := execwire.AppendJSON(make([]byte, 0, 64), execwire.Exit, exit); err == nil {
		_ = s.send(b)
	}
	s.logExec(exit)
	if s.spec.endSession {
		s.hangUp() // what it left running goes with it
	}
}

// hangUp starts ending the whole session after the client went away:
// SIGHUP now, as a hung-up terminal would, and SIGKILL for whatever is
// left after the grace period.
func (s *session) hangUp() {
	if s.exited.Load() && !s.spec.endSession {
		return // the stream ended because the process did; leave its background children be
	}
	s.hangUpOnce.Do(func() {
		// killed exists before gone says so: run, which waits on it once
		// it sees gone, may see it as soon as the SIGHUP has ended the
		// process, before this goroutine goes on.
		s.killed = make(chan struct{})
		s.gone.Store(true)
		s.proc.killSession(syscall.SIGHUP, s.spec.marker)
		time.AfterFunc(s.grace, func() {
			s.proc.killSession(syscall.SIGKILL, s.spec.marker)
			close(s.killed)
		})
	})
}

// finishKill returns once nothing of the session is left: at once when
// SIGHUP ended it all, else after the grace period's SIGKILL.
func (s *session) finishKill() {
	if len(sessionMembers(s.proc.cmd.Process.Pid)) == 0 && len(markedProcesses(s.spec.marker)) == 0 {
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

func (s *session) pump(r *os.File, t execwire.Type, pipe bool) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	// The frame's header goes in front of the data, so that each chunk
	// leaves in one write, straight from the buffer the pipe was read into.
	frame := *bp
	buf := frame[execwire.HeaderSize:]
	slot := &s.reading[0]
	if t == execwire.Stderr {
		slot = &s.reading[1]
	}
	defer func() {
		slot.Store(-1)
		if s.pumping.Add(-1) == 0 {
			close(s.pumped)
		}
	}()
	var last time.Time
	streak, small := 0, false
	for {
		if small && streak >= coalesceStreak && !s.exited.Load() {
			// A process writing a stream in small pieces: let a few land
			// before the next read, so that one frame carries them.
			time.Sleep(coalesceWait)
		}
		slot.Store(time.Now().UnixNano())
		n, err := r.Read(buf)
		now := time.Now()
		slot.Store(0)
		if s.exited.Load() {
			s.afterExit.Add(int64(n))
		}
		if now.Sub(last) < 2*coalesceWait {
			streak++
		} else {
			streak = 0
		}
		last, small = now, n < len(buf)/4
		if pipe && (n >= defaultPipeSize || streak >= coalesceStreak) {
			growPipe(r)
			pipe = false
		}
		if n > 0 {
			execwire.PutHeader(frame, t, n)
			if s.conn.write(frame[:execwire.HeaderSize+n]) != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func argv0(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return argv[0]
}

func exitText(e *execwire.ExitMsg) string {
	switch {
	case e == nil:
		return "killed (client gone)"
	case e.Signal != "":
		return e.Signal
	default:
		return strconv.Itoa(int(e.Code))
	}
}
