package egresslog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/egressrelay"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/acceptloop"
)

// Defaults of a Server's bounds.
const (
	// DefaultMaxClients is how many clients read the log at once: a few
	// people's `cowork proxy --follow`; each costs a poll of the log's
	// file every 200 ms.
	DefaultMaxClients = 8
	// DefaultRequestTimeout is how long a client has to send its request
	// once connected.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultWriteTimeout is how long a client may leave a reply unread
	// (its connection's buffers full) before it is dropped, and its
	// place freed.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultHeartbeat is how often a stream sends a heartbeat line: a
	// third of the time a client waits for a line (readIdle).
	DefaultHeartbeat = 20 * time.Second
	// stopGrace is how long a client has, once the server stops, to take
	// the line that says so: then its connection is closed, whatever
	// it waits for.
	stopGrace = time.Second
)

// Server serves an audit log to its clients, read-only.
type Server struct {
	// Path is the log (network.jsonl; its rotated files beside it).
	Path string
	// MaxClients bounds the clients served at once (0:
	// DefaultMaxClients); one more is refused, saying so.
	MaxClients int
	// RequestTimeout bounds the wait for a client's request (0:
	// DefaultRequestTimeout).
	RequestTimeout time.Duration
	// WriteTimeout bounds the wait for a client to take a reply (0:
	// DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Heartbeat is how often a stream sends a heartbeat (0:
	// DefaultHeartbeat), whether records come or not: the client sees
	// that the server still serves it, and the server writes even while
	// the log is idle, so that a connection that broke is seen then too
	// (one whose client stopped reading fills up, a heartbeat's few
	// bytes at a time, and is dropped after WriteTimeout).
	Heartbeat time.Duration
	// Log hears of a log that could not be read (nil: nothing).
	Log *slog.Logger
}

// Serve answers the clients of l, which must be a loopback listener (it
// is closed and refused otherwise), until ctx ends: then it closes l,
// ends every stream with the reason, and returns once they have ended,
// within stopGrace however the clients read (the pod's grace period,
// which ends in a SIGKILL, must leave time for the audit log's anchor).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if err := egressrelay.CheckLoopback(l.Addr().String()); err != nil {
		l.Close()
		return err
	}
	n := s.MaxClients
	if n <= 0 {
		n = DefaultMaxClients
	}
	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	err := acceptloop.Serve(counted{l, &wg}, func(c net.Conn) {
		defer wg.Done()
		defer c.Close()
		// A client that stopped reading, or never sent its request,
		// would hold the handler up to WriteTimeout or RequestTimeout.
		stopping := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, func() { c.Close() }) })
		defer stopping()
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			c.SetReadDeadline(time.Now().Add(time.Second))
			readRequest(c)
			s.refuse(c, fmt.Sprintf("the egress proxy serves %d readers of its log at once, and has no room for another; try again when one ends", n))
			return
		}
		s.serve(ctx, c)
	}, nil)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// counted counts the connections it accepts in wg, before Serve can
// return: each handler marks its end.
type counted struct {
	net.Listener
	wg *sync.WaitGroup
}

func (l counted) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.wg.Add(1)
	}
	return c, err
}

// serve answers one client.
func (s *Server) serve(ctx context.Context, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(orDefault(s.RequestTimeout, DefaultRequestTimeout)))
	line, err := readRequest(c)
	if err != nil {
		s.refuse(c, err.Error())
		return
	}
	since, follow, err := parseRequest(line)
	if err != nil {
		s.refuse(c, err.Error())
		return
	}
	c.SetReadDeadline(time.Time{})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &replies{c: c, timeout: s.writeTimeout()}
	if follow {
		// A follower that went away is seen here, not at the next record,
		// which may never come: its place is freed at once. It sends
		// nothing more; anything it does send ends the stream too.
		go func() {
			var b [1]byte
			c.Read(b[:])
			cancel()
		}()
	}
	if !out.send(Reply{Ready: true, Heartbeat: true}) {
		return
	}
	// A heartbeat that cannot be sent ends the stream, as a record does.
	hctx, stopBeats := context.WithCancel(sctx)
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		t := time.NewTicker(orDefault(s.Heartbeat, DefaultHeartbeat))
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				if !out.send(Reply{}) {
					cancel()
					return
				}
			}
		}
	}()
	long := 0
	skipped, err := audit.Stream(sctx, s.Path, since, follow, func(r *audit.Record) error {
		if err := sctx.Err(); err != nil {
			return err // a backlog is not read on once the server stops
		}
		rec, err := json.Marshal(r)
		if err != nil || len(rec) >= MaxRecord {
			long++ // a line re-encoded longer than a client takes
			return nil
		}
		if !out.send(Reply{Record: rec}) {
			return errGone
		}
		return nil
	})
	stopBeats()
	<-beats // none after the end line
	skipped += long
	switch {
	case errors.Is(err, errGone): // it stopped reading
	case err == nil && !follow: // the log read to its end
		out.send(Reply{End: &End{Skipped: skipped}})
	case ctx.Err() != nil:
		out.send(Reply{End: &End{Skipped: skipped, Error: "the egress proxy is stopping; run this again once its new pod is ready"}})
	case sctx.Err() != nil: // the follower went away, or stopped reading
	default:
		if s.Log != nil {
			s.Log.Warn("audit log stream failed", "err", err)
		}
		out.send(Reply{End: &End{Skipped: skipped, Error: fmt.Sprintf("the egress proxy could not read its audit log: %v; see the pod's log", err)}})
	}
}

// errGone is a client that stopped reading.
var errGone = errors.New("the client went away")

// readRequest reads the request line: at most MaxRequest bytes and its
// newline.
func readRequest(c io.Reader) ([]byte, error) {
	r := bufio.NewReaderSize(io.LimitReader(c, MaxRequest+1), MaxRequest+1)
	line, err := r.ReadSlice('\n')
	switch {
	case err == nil:
		return bytes.TrimSpace(line), nil
	case errors.Is(err, bufio.ErrBufferFull) || (errors.Is(err, io.EOF) && len(line) > MaxRequest):
		return nil, fmt.Errorf("a request is one JSON line of at most %d bytes", MaxRequest)
	case errors.Is(err, io.EOF):
		return nil, errors.New("the request ended before its newline")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, errors.New("no request came in time: send it at once, one JSON line")
	}
	return nil, err
}

func (s *Server) writeTimeout() time.Duration { return orDefault(s.WriteTimeout, DefaultWriteTimeout) }

// orDefault is d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// replies sends the reply lines of one client, one at a time (its
// stream's and its heartbeats); once one could not be sent, none is.
type replies struct {
	c       net.Conn
	timeout time.Duration
	mu      sync.Mutex
	broken  bool
}

// send sends one reply line; false when the client is gone or has not
// taken it in r.timeout.
func (r *replies) send(rep Reply) bool {
	b, err := json.Marshal(rep)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.broken {
		r.c.SetWriteDeadline(time.Now().Add(r.timeout))
		_, err = r.c.Write(append(b, '\n'))
		r.broken = err != nil
	}
	return !r.broken
}

// refuse sends msg as the only line, then closes c gently: what the
// client sent and was not read (a request over the bound) is drained
// for a moment, up to a bound, so that the close does not reset the
// connection before the client has read why.
func (s *Server) refuse(c net.Conn, msg string) {
	(&replies{c: c, timeout: s.writeTimeout()}).send(Reply{End: &End{Error: msg}})
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}
