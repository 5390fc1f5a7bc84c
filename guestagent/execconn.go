package guestagent

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/internal/execwire"
)

// hostLimits bounds every frame the host sends. The host sends stdin in
// chunks of at most execwire.MaxStdin; anything larger is refused.
var hostLimits = (&execwire.Limits{}).
	Allow(execwire.Start, execwire.MaxStart).
	Allow(execwire.Stdin, execwire.MaxStdin).
	Allow(execwire.CloseStdin, 0).
	Allow(execwire.Signal, 4).
	Allow(execwire.Resize, 8)

// stdinPool holds the buffers stdin frames are read into; writeStdin puts
// each back once the process has it.
var stdinPool = sync.Pool{New: func() any { b := make([]byte, execwire.MaxStdin); return &b }}

// execConn is one exec connection (execwire): it runs one exec at a time,
// and the next once the last one's exit is sent.
type execConn struct {
	s   *Server
	c   net.Conn
	r   *execwire.Reader
	wmu sync.Mutex // one frame at a time; frames are written whole
}

// ServeExec serves an exec connection whose preface (execwire.Preface)
// has been read, until the host closes it. It reads the host's frames
// itself and starts each process from here, so that a start costs no
// handoff between goroutines.
func (s *Server) ServeExec(c net.Conn) {
	if !s.addConn(c) {
		c.Close()
		return
	}
	defer s.removeConn(c)
	defer c.Close()
	// Host frames are small but for stdin, which a buffer this size does
	// not hold: bufio reads a larger payload straight into the stdin buffer.
	ec := &execConn{s: s, c: c, r: execwire.NewReader(bufio.NewReaderSize(c, 4<<10), hostLimits)}
	ec.serve()
}

func (ec *execConn) serve() {
	var sess *session // the exec running, or the last one
	served := false   // an exec ran: stray frames are its leftovers
	var ctl [8]byte
	for {
		t, n, err := ec.r.Next()
		if sess != nil && sess.isOver() {
			sess = nil
		}
		if err != nil {
			var fe *execwire.FrameError
			if errors.As(err, &fe) && sess == nil {
				kind := execwire.KindTooLarge
				if fe.Max < 0 {
					kind = execwire.KindProtocol
				}
				ec.refuse(kind, err.Error())
			}
			if sess != nil {
				sess.clientGone()
			}
			return
		}
		switch t {
		case execwire.Start:
			if sess != nil {
				ec.s.log.Warn("exec connection: a second start while a process runs; hanging up")
				sess.clientGone()
				return
			}
			buf := make([]byte, n)
			p, err := ec.r.ReadPayload(buf, n)
			if err != nil {
				return
			}
			sess = ec.start(p)
			served = true
		case execwire.Stdin:
			bp := stdinPool.Get().(*[]byte)
			p, err := ec.r.ReadPayload(*bp, n)
			if err != nil {
				stdinPool.Put(bp)
				if sess != nil {
					sess.clientGone()
				}
				return
			}
			if !served {
				stdinPool.Put(bp)
				ec.refuse(execwire.KindProtocol, "an exec must begin with start")
				return
			}
			if sess == nil || !sess.input(bp, len(p)) {
				stdinPool.Put(bp)
			}
		default:
			p, err := ec.r.ReadPayload(ctl[:], n)
			if err != nil {
				if sess != nil {
					sess.clientGone()
				}
				return
			}
			if !served {
				ec.refuse(execwire.KindProtocol, "an exec must begin with start")
				return
			}
			if sess != nil {
				sess.control(t, p)
			}
		}
	}
}

// start runs the process a Start frame asks for and returns its session,
// or nil when it was refused (the refusal is sent).
func (ec *execConn) start(payload []byte) *session {
	s := ec.s
	var start execwire.StartMsg
	if err := json.Unmarshal(payload, &start); err != nil {
		ec.refuse(execwire.KindInvalid, "start: "+err.Error())
		return nil
	}
	spec, err := resolveSpec(&start, s.opts.DefaultUser, s.accounts)
	if err != nil {
		msg := err.Error()
		s.log.Warn("exec refused", "user", start.User, "argv0", argv0(start.Argv), "err", msg)
		ec.refuse(kindOf(err), msg)
		return nil
	}
	if sock := s.sshAgentSocket(); sock != "" && !slices.ContainsFunc(spec.env, func(kv string) bool { return strings.HasPrefix(kv, "SSH_AUTH_SOCK=") }) {
		spec.env = append(spec.env, "SSH_AUTH_SOCK="+sock)
	}
	spec.env = withSecretVars(spec.env, s.secretVars())
	spec.marker, spec.endSession = start.ExecID, start.EndSession
	if spec.marker == "" {
		spec.marker = newMarker()
	}
	spec.env = setEnv(spec.env, markerVar+"="+spec.marker)
	p, err := startProcess(spec)
	if err != nil {
		s.log.Warn("exec failed", "user", spec.user.name, "argv0", spec.argv[0], "err", err)
		ec.refuse(execwire.KindFailed, "start "+spec.argv[0]+": "+err.Error())
		return nil
	}
	sess := newSession(ec, p, spec)
	sess.done = s.track() // before the goroutine: Wait must see it at once
	go sess.run()
	return sess
}

// refuse answers a Start with an Exit that says why nothing ran.
func (ec *execConn) refuse(kind, msg string) {
	if len(msg) > execwire.MaxExit/2 {
		msg = msg[:execwire.MaxExit/2]
	}
	b, err := execwire.AppendJSON(nil, execwire.Exit, execwire.ExitMsg{Code: -1, Error: msg, Kind: kind})
	if err == nil {
		_ = ec.write(b)
	}
}

// write sends whole frames.
func (ec *execConn) write(b []byte) error {
	ec.wmu.Lock()
	defer ec.wmu.Unlock()
	_, err := ec.c.Write(b)
	return err
}

// input queues one stdin chunk (a stdinPool buffer) for the process; it
// reports false when the process takes no more input, and the caller
// keeps the buffer. It blocks while the queue is full, and with it the
// reading of the connection: the host's writes then wait, which is the
// flow control.
func (s *session) input(bp *[]byte, n int) bool {
	if s.stdin == nil || s.stdinClosed {
		return false
	}
	select {
	case s.stdin <- stdinChunk{bp, n}:
		return true
	case <-s.over:
		return false
	}
}

// endInput is the end of the host's stdin for the process.
func (s *session) endInput() {
	if s.stdin != nil && !s.stdinClosed {
		s.stdinClosed = true
		close(s.stdin)
	}
}

// control applies a close-stdin, signal or resize frame.
func (s *session) control(t execwire.Type, p []byte) {
	switch t {
	case execwire.CloseStdin:
		s.endInput()
	case execwire.Signal:
		if v, err := execwire.Uint32s(p, 1); err == nil {
			_ = s.proc.signal(syscall.Signal(v[0]))
		}
	case execwire.Resize:
		if v, err := execwire.Uint32s(p, 2); err == nil {
			_ = s.proc.resize(&execwire.TerminalSize{Rows: v[0], Cols: v[1]})
		}
	}
}

// clientGone is the host going away (its connection ended or broke): the
// end of stdin, and a hang-up unless the process already exited.
func (s *session) clientGone() {
	s.endInput()
	s.hangUp()
}

// writeStdin feeds the process's input, then closes it. After a write fails
// (the process closed its stdin) the rest is read and dropped so that the
// connection keeps moving; once the session is over nothing is left to feed.
func (s *session) writeStdin() {
	failed := false
	for {
		select {
		case c, ok := <-s.stdin:
			if !ok {
				if !failed {
					_ = s.proc.closeStdin()
				}
				return
			}
			if !failed {
				if _, err := s.proc.stdin.Write((*c.buf)[:c.n]); err != nil {
					failed = true
				}
			}
			stdinPool.Put(c.buf)
		case <-s.over:
			return
		}
	}
}

// stdinChunk is n bytes of stdin in a stdinPool buffer.
type stdinChunk struct {
	buf *[]byte
	n   int
}

// logExec writes the one line each exec leaves in the log.
func (s *session) logExec(exit *execwire.ExitMsg) {
	s.conn.s.log.Info("exec", "user", s.spec.user.name, "argv0", s.spec.argv[0], "pid", s.proc.cmd.Process.Pid,
		"exit", exitText(exit), "duration", time.Since(s.began).Round(time.Millisecond))
}
