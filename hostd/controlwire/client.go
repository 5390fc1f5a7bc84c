package controlwire

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Client calls a control API, one connection per call. Close cuts the
// calls still open (a relay session's among them).
type Client struct {
	dial func(ctx context.Context) (net.Conn, error)
	what string // what dial reaches, for errors
	peer string // who answers there, for errors: "hostd", or what

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
}

// NewClient is a client of the control API on the Unix socket at sock.
func NewClient(sock string) *Client {
	var d net.Dialer
	return &Client{
		dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", sock) },
		what: sock, open: map[net.Conn]struct{}{},
	}
}

// NewClientDial is a client of the control API that dial reaches (what
// names it in errors): a TCP port of a cluster's egress pod through the
// API server's port-forward, say.
func NewClientDial(what string, dial func(ctx context.Context) (net.Conn, error)) *Client {
	return &Client{dial: dial, what: what, peer: what, open: map[net.Conn]struct{}{}}
}

// Close cuts every call in flight; later calls fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for conn := range c.open {
		conn.Close()
	}
	clear(c.open)
	return nil
}

// Status asks hostd about the instance.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	r, err := c.unary(ctx, &Request{Call: CallStatus})
	if err != nil {
		return nil, err
	}
	if r.Status == nil {
		return nil, Errorf(CodeInternal, "hostd answered status without one")
	}
	return r.Status, nil
}

// Stop shuts the VM down and returns once it stopped.
func (c *Client) Stop(ctx context.Context, req StopRequest) error {
	_, err := c.unary(ctx, &Request{Call: CallStop, Stop: &req})
	return err
}

// SetPolicy replaces the running guest's network policy, given as the
// instance config's JSON.
// Ports lists the guest ports published on the host (CallPorts).
func (c *Client) Ports(ctx context.Context) ([]Port, error) {
	r, err := c.unary(ctx, &Request{Call: CallPorts})
	if err != nil {
		return nil, err
	}
	if len(r.Ports) > MaxPorts {
		return nil, fmt.Errorf("hostd answered %d ports, more than it publishes", len(r.Ports))
	}
	return r.Ports, nil
}

// Publish makes a guest TCP port reachable on the host (CallPublish).
func (c *Client) Publish(ctx context.Context, req PublishRequest) (Port, error) {
	return c.onePort(ctx, &Request{Call: CallPublish, Publish: &req})
}

// Unpublish takes a published port back (CallUnpublish).
func (c *Client) Unpublish(ctx context.Context, which string) (Port, error) {
	return c.onePort(ctx, &Request{Call: CallUnpublish, Unpublish: which})
}

func (c *Client) onePort(ctx context.Context, req *Request) (Port, error) {
	r, err := c.unary(ctx, req)
	if err != nil {
		return Port{}, err
	}
	if len(r.Ports) != 1 {
		return Port{}, fmt.Errorf("hostd answered %s with %d ports, not one", req.Call, len(r.Ports))
	}
	return r.Ports[0], nil
}

// AutoPublish starts or stops following the guest's listening sockets
// (CallAutoPublish).
func (c *Client) AutoPublish(ctx context.Context, on bool) error {
	_, err := c.unary(ctx, &Request{Call: CallAutoPublish, AutoPublish: &on})
	return err
}

// ReloadSecrets has hostd take the instance's secrets as its config now
// says (CallReloadSecrets).
func (c *Client) ReloadSecrets(ctx context.Context) (*SecretsReloaded, error) {
	r, err := c.unary(ctx, &Request{Call: CallReloadSecrets})
	if err != nil {
		return nil, err
	}
	if r.SecretsReloaded == nil {
		return &SecretsReloaded{}, nil
	}
	return r.SecretsReloaded, nil
}

// ToolCalls writes an ask's tool calls into the audit log
// (CallToolCalls).
func (c *Client) ToolCalls(ctx context.Context, req ToolCallsRequest) error {
	_, err := c.unary(ctx, &Request{Call: CallToolCalls, ToolCalls: &req})
	return err
}

// Wake runs on a guest hostd holds loaded and paused (CallWake).
func (c *Client) Wake(ctx context.Context) error {
	_, err := c.unary(ctx, &Request{Call: CallWake})
	return err
}

// Suspend saves the running guest and stops its VM (CallSuspend).
func (c *Client) Suspend(ctx context.Context, req SuspendRequest) (*Suspended, error) {
	r, err := c.unary(ctx, &Request{Call: CallSuspend, Suspend: &req})
	if err != nil {
		return nil, err
	}
	if r.Suspended == nil {
		return nil, Errorf(CodeInternal, "hostd answered suspend without what it saved")
	}
	return r.Suspended, nil
}

func (c *Client) SetPolicy(ctx context.Context, policy json.RawMessage) error {
	_, err := c.unary(ctx, &Request{Call: CallSetPolicy, Policy: policy})
	return err
}

// CloseSession ends a session by its id, and answers what it spent (nil
// from a hostd older than that answer, or for a session that had ended).
func (c *Client) CloseSession(ctx context.Context, id string) (*SessionUsage, error) {
	r, err := c.unary(ctx, &Request{Call: CallCloseSession, SessionID: id})
	if err != nil {
		return nil, err
	}
	return r.SessionUsage, nil
}

// Events follows the boot; the stream lives until ctx ends, Close, or
// the boot's end.
func (c *Client) Events(ctx context.Context) (*Stream[Event], error) {
	call, err := c.call(ctx, &Request{Call: CallEvents})
	if err != nil {
		return nil, err
	}
	return &Stream[Event]{call: call, pick: func(r *Reply) *Event { return r.Event }}, nil
}

// OpenSession opens a relay session: its first message is the Session;
// it lives as long as the stream (until ctx ends, or Close).
func (c *Client) OpenSession(ctx context.Context, req OpenSessionRequest) (*Stream[Session], error) {
	call, err := c.call(ctx, &Request{Call: CallOpenSession, OpenSession: &req})
	if err != nil {
		return nil, err
	}
	return &Stream[Session]{call: call, pick: func(r *Reply) *Session { return r.Session }}, nil
}

// Learn puts the guest network in learn mode (CallLearn): its first
// message is the Learning; the mode lives as long as the stream.
func (c *Client) Learn(ctx context.Context, req LearnRequest) (*Stream[Learning], error) {
	call, err := c.call(ctx, &Request{Call: CallLearn, Learn: &req})
	if err != nil {
		return nil, err
	}
	return &Stream[Learning]{call: call, pick: func(r *Reply) *Learning { return r.Learning }}, nil
}

// Stream is a call's messages.
type Stream[T any] struct {
	*call
	pick func(*Reply) *T
}

// Recv is the next message; io.EOF once hostd ended the call as done, its
// *Error when it ended it with one, ctx's error once ctx ended, and an
// *Error of CodeUnavailable when the connection broke first.
func (s *Stream[T]) Recv() (*T, error) {
	for {
		r, err := s.read()
		if err != nil {
			return nil, err
		}
		if m := s.pick(r); m != nil {
			return m, nil
		}
		if r.Done {
			return nil, io.EOF
		}
	}
}

// Close ends the call: hostd sees the connection close. It may be called
// while another goroutine waits in Recv.
func (s *Stream[T]) Close() error { s.end(); return nil }

// call is one call's connection.
type call struct {
	c    *Client
	ctx  context.Context
	conn net.Conn
	r    *bufio.Reader
	stop func() bool // stops the watch on ctx
	done atomic.Bool // the last line was read, or the call was cut
	once sync.Once
}

// who names the server in errors: hostd, or what NewClientDial dials.
func (c *Client) who() string {
	if c.peer != "" {
		return c.peer
	}
	return "hostd"
}

// call connects and sends req. The connection closes when ctx ends.
func (c *Client) call(ctx context.Context, req *Request) (*call, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := c.dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if c.peer != "" {
			return nil, Errorf(CodeUnavailable, "%s does not answer: %v", c.peer, err)
		}
		return nil, Errorf(CodeUnavailable, "hostd does not answer on %s: %v", c.what, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return nil, Errorf(CodeUnavailable, "the client of %s is closed", c.what)
	}
	c.open[conn] = struct{}{}
	c.mu.Unlock()
	cl := &call{c: c, ctx: ctx, conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}
	cl.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if err := writeLine(conn, req); err != nil {
		cl.end()
		return nil, cl.lost(err)
	}
	return cl, nil
}

// unary makes a call that answers one line, and returns that line.
func (c *Client) unary(ctx context.Context, req *Request) (*Reply, error) {
	cl, err := c.call(ctx, req)
	if err != nil {
		return nil, err
	}
	defer cl.end()
	r, err := cl.read()
	if err != nil {
		return nil, err
	}
	if !r.Done {
		return nil, Errorf(CodeInternal, "%s answered %s with more than one line", c.who(), req.Call)
	}
	return r, nil
}

// read reads the next line: a message, or the last line (Done); after
// the last line, io.EOF. A line with an error is that error.
func (cl *call) read() (*Reply, error) {
	if cl.done.Load() {
		return nil, io.EOF
	}
	line, err := readLine(cl.r, MaxReply)
	if err != nil {
		cut := cl.done.Load() // Close cut it: no failure of hostd's
		cl.end()
		switch {
		case cut:
			return nil, io.EOF
		case errors.Is(err, errTooLong):
			return nil, Errorf(CodeInternal, "%s sent a line longer than %d bytes", cl.c.who(), MaxReply)
		}
		return nil, cl.lost(err)
	}
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		cl.end()
		return nil, Errorf(CodeInternal, "%s sent a line this client cannot read: %v", cl.c.who(), err)
	}
	if err := replyError(&r); err != nil {
		cl.end()
		return nil, err
	}
	if r.Done {
		cl.end()
	}
	return &r, nil
}

// lost is the error of a connection that broke: ctx's when ctx ended
// (which closed it), else hostd went away.
func (cl *call) lost(err error) error {
	if cl.ctx.Err() != nil {
		return cl.ctx.Err()
	}
	cl.c.mu.Lock()
	closed := cl.c.closed
	cl.c.mu.Unlock()
	if closed {
		return Errorf(CodeUnavailable, "the client of %s was closed", cl.c.what)
	}
	if cl.c.peer != "" {
		return Errorf(CodeUnavailable, "the connection to %s ended before the call did (%v)", cl.c.peer, err)
	}
	return Errorf(CodeUnavailable, "hostd closed the connection before the call ended (%v); it may have exited", err)
}

// end closes the connection, once.
func (cl *call) end() {
	cl.done.Store(true)
	cl.once.Do(func() {
		cl.stop()
		cl.conn.Close()
		cl.c.mu.Lock()
		delete(cl.c.open, cl.conn)
		cl.c.mu.Unlock()
	})
}
