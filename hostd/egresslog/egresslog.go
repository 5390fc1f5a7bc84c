// Package egresslog serves the audit log of a cluster's egress proxy
// (`cowork-hostd egress --log-listen`) to `cowork proxy`, which reads it
// through cowork-hostd-kubevirt and the API server's pods/portforward, as
// the relay's sessions are opened (egressrelay): on a loopback address of
// the pod, which the guests on the pod network never reach, so that
// only a caller the cluster's RBAC lets port-forward reads it. It is
// read-only: a client asks for the records since a time, and to follow
// the log or not, and gets them as JSON lines; nothing it sends reaches
// the log or the proxy.
//
// The protocol: the client sends one Request as a JSON line; the server
// answers JSON lines of Reply: {"ready":true} once it took the request,
// then {"record":{...}} for each record (an audit.Record, as `cowork
// proxy --json` prints it), then {"end":{...}} when the stream ends (the
// log was read to its end without follow, the pod is stopping, or the
// request was refused, in which case it comes first and alone). A server
// that says "heartbeat":true in its ready line sends a heartbeat, {},
// every Server.Heartbeat until the end line, whether records come or
// not; a client takes a line that sets none of its fields as one.
package egresslog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/internal/termsafe"
)

// Request is what a client asks for.
type Request struct {
	// Since is the oldest record's time, RFC 3339; "" for all of the log.
	Since string `json:"since,omitempty"`
	// Follow keeps the stream open for new records, across rotations,
	// until the client goes or the pod stops.
	Follow bool `json:"follow,omitempty"`
}

// Reply is one line of the server's answer: the ready line, a record,
// the end line, or a heartbeat (no field set).
type Reply struct {
	Ready bool `json:"ready,omitempty"`
	// Heartbeat, in the ready line, says heartbeats follow: a client may
	// take a silence of several as a server that stopped answering.
	Heartbeat bool            `json:"heartbeat,omitempty"`
	Record    json.RawMessage `json:"record,omitempty"`
	End       *End            `json:"end,omitempty"`
}

// End is the last line of an answer.
type End struct {
	// Skipped counts the damaged lines of the log the server left out.
	Skipped int `json:"skipped,omitempty"`
	// Error says why the stream ended early, or why the request was
	// refused; "" for a log read to its end.
	Error string `json:"error,omitempty"`
}

// Bounds of the protocol: what one client can make the pod read, and
// what a client takes from a server.
const (
	// MaxRequest bounds the request line: a time and a flag.
	MaxRequest = 4 << 10
	// MaxRecord bounds a record's line, with its newline, as `cowork
	// proxy` bounds the lines of a local log (audit's maxLine) and those
	// cowork-hostd-kubevirt log prints it (the maxLine of cowork's
	// binary.go): a longer one is skipped as damaged, by the server and
	// by Read.
	MaxRecord = 1 << 20
	// MaxReply bounds a reply line: a record and its envelope.
	MaxReply = MaxRecord + 64
	// maxError bounds the server's message, as a client shows it.
	maxError = 1 << 10
	// readIdle is how long Read waits for a line of a server that sends
	// heartbeats (and for its first line): three heartbeats.
	readIdle = 3 * DefaultHeartbeat
)

// NoAnswerError is a server that ended the stream, or failed, before
// its first reply: on a cluster, an egress pod whose image predates
// --log-listen, whose port then answers nothing.
type NoAnswerError struct{ Err error }

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("no answer from the egress proxy's log port: %v", e.Err)
}
func (e *NoAnswerError) Unwrap() error { return e.Err }

// RefusedError is the server's own reason to end the stream (End.Error),
// made printable.
type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string { return e.Msg }

// Read sends req on c and hands each record's JSON line (one line, no
// newline) to each, until the server ends the stream; it returns how
// many damaged lines were skipped: by the server, and by Read, which
// passes on no record whose line, with its newline, is longer than
// MaxRecord (`cowork proxy` would not take it; this cowork's server
// sends none). A stream that ends without its end line is an error (a
// pod that stopped, a port-forward that broke), as is a line over
// MaxReply or one that is no Reply: what the server says is taken as no
// more than JSON lines of bounded length. A server that sends no line
// for a minute, its first or, once it said it sends heartbeats, any
// other, has stopped answering: Read closes c and says so. (A
// port-forward whose far end is gone can stay open and silent.)
func Read(c io.ReadWriteCloser, req Request, each func(record []byte) error) (skipped int, err error) {
	return read(c, req, each, readIdle)
}

// read is Read waiting at most idle for a line.
func read(c io.ReadWriteCloser, req Request, each func(record []byte) error, idle time.Duration) (skipped int, err error) {
	b, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return 0, &NoAnswerError{err}
	}
	// The watch runs while Read waits for a line, not while each takes
	// one: a reader of `cowork proxy` that stops reading for a while is
	// no silence of the server's.
	var silent atomic.Bool
	watch := time.AfterFunc(idle, func() {
		silent.Store(true)
		c.Close()
	})
	defer watch.Stop()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 64<<10), MaxReply)
	first, beats, long := true, false, 0
	for sc.Scan() {
		watch.Stop()
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return 0, fmt.Errorf("the egress proxy's log port sent a line that is no reply (%v): not this cowork's log server", err)
		}
		if first {
			beats = r.Heartbeat // none from a server older than them
		}
		switch {
		case r.End != nil:
			if r.End.Error != "" {
				return r.End.Skipped + long, &RefusedError{clip(r.End.Error)}
			}
			return r.End.Skipped + long, nil
		case first && !r.Ready:
			return 0, errors.New("the egress proxy's log port began with no ready line: not this cowork's log server")
		case len(r.Record) >= MaxRecord: // a line longer than its readers take
			long++
		case r.Record != nil:
			if err := each(r.Record); err != nil {
				return 0, err
			}
		}
		first = false
		if beats {
			watch.Reset(idle)
		}
	}
	err = sc.Err()
	switch {
	case silent.Load():
		return 0, fmt.Errorf("the egress proxy's log port sent nothing for %s, not even a heartbeat: the egress pod stopped answering, or the port-forward to it broke; run this again, and if it hangs again see whether the pod is ready", idle)
	case errors.Is(err, bufio.ErrTooLong):
		return 0, fmt.Errorf("the egress proxy's log port sent a line over %d bytes: not this cowork's log server", MaxReply)
	case err == nil:
		err = io.ErrUnexpectedEOF
	}
	if first {
		return 0, &NoAnswerError{err}
	}
	return 0, fmt.Errorf("the egress proxy's log stream broke off: %w", err)
}

// clip makes a server's message printable and short.
func clip(s string) string {
	s = termsafe.Line(s)
	if len(s) > maxError {
		s = strings.ToValidUTF8(s[:maxError], "") + "…"
	}
	return s
}

// parseRequest reads a request line.
func parseRequest(line []byte) (since time.Time, follow bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return time.Time{}, false, fmt.Errorf("the request is not a log request (%v); this egress proxy may be older than your cowork", err)
	}
	if req.Since != "" {
		if since, err = time.Parse(time.RFC3339, req.Since); err != nil {
			return time.Time{}, false, fmt.Errorf("since %q: want an RFC 3339 time", req.Since)
		}
	}
	return since, req.Follow, nil
}
