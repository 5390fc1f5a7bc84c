package qemu

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/lograte"
)

// agentChannel is hostd's end of the agent's virtio-serial port: one unix
// connection to QEMU's chardev with a yamux session on it, remade when it
// breaks (the agent restarted, or garbage came through).
type agentChannel struct {
	path string
	log  *slog.Logger

	mu     sync.Mutex
	sess   *yamux.Session
	conn   net.Conn
	closed bool
}

// newAgentChannel makes the channel; what it and its sessions' yamux log
// is rate-limited (lograte) across sessions: a guest that breaks the
// channel in a loop gets a few lines, not a line each time.
func newAgentChannel(path string, log *slog.Logger) *agentChannel {
	return &agentChannel{path: path, log: lograte.Logger(log)}
}

// dial opens a stream, connecting (again) when there is no live session.
func (a *agentChannel) dial(ctx context.Context) (net.Conn, error) {
	for {
		sess, err := a.session()
		if err != nil {
			return nil, err
		}
		s, err := sess.OpenStream()
		if err == nil {
			return newShrinkingStream(s), nil
		}
		a.log.Warn("agent channel broke; reconnecting", "err", err)
		a.reset(sess)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *agentChannel) session() (*yamux.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errClosed
	}
	if a.sess != nil && !a.sess.IsClosed() {
		return a.sess, nil
	}
	if a.conn != nil {
		a.conn.Close()
	}
	c, err := net.Dial("unix", a.path)
	if err != nil {
		return nil, err
	}
	sess, err := agentwire.HostSession(c, a.log)
	if err != nil {
		c.Close()
		return nil, err
	}
	a.conn, a.sess = c, sess
	return sess, nil
}

// current is the session in use, if any.
func (a *agentChannel) current() *yamux.Session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess
}

// reset drops sess if it is still the current session.
func (a *agentChannel) reset(sess *yamux.Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess == sess {
		sess.Close()
		a.conn.Close()
		a.sess, a.conn = nil, nil
	}
}

// drop ends the current session, failing its streams.
func (a *agentChannel) drop() {
	a.mu.Lock()
	sess := a.sess
	a.mu.Unlock()
	if sess != nil {
		a.reset(sess)
	}
}

func (a *agentChannel) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.sess != nil {
		a.sess.Close()
	}
	if a.conn != nil {
		a.conn.Close()
	}
}

// idleShrink is how long a stream goes without data before it drops its
// receive buffer.
var idleShrink = time.Second

// shrinkingStream is a yamux stream that gives back its receive buffer
// once no data came for idleShrink. yamux keeps a stream's buffer at the
// largest it grew to (up to the 1 MiB window) for as long as the stream
// lives, and a client's idle exec connections live long: after one
// stream of output, each kept a megabyte or two of hostd's heap
// (issue 17's idle memory). yamux's own Shrink drops the buffer only when
// it is empty, so calling it from the timer races with nothing.
type shrinkingStream struct {
	*yamux.Stream
	timer *time.Timer
}

func newShrinkingStream(s *yamux.Stream) *shrinkingStream {
	return &shrinkingStream{Stream: s, timer: time.AfterFunc(idleShrink, s.Shrink)}
}

func (s *shrinkingStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	s.timer.Reset(idleShrink)
	return n, err
}

func (s *shrinkingStream) Close() error {
	s.timer.Stop()
	return s.Stream.Close()
}
