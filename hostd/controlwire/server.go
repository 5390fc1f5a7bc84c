package controlwire

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/coworkhq/cowork/internal/acceptloop"
)

// Handler is the control API's calls, as a server serves them. ctx ends
// when the client closes its connection (or the server shuts down). A
// stream sends its messages with send, which fails once the client is
// gone; returning ends the call: nil is done, an *Error says its code.
type Handler interface {
	Status(ctx context.Context) (*Status, error)
	Stop(ctx context.Context, req StopRequest) error
	Events(ctx context.Context, send func(*Event) error) error
	SetPolicy(ctx context.Context, policy json.RawMessage) error
	OpenSession(ctx context.Context, req OpenSessionRequest, send func(*Session) error) error
	CloseSession(ctx context.Context, id string) (*SessionUsage, error)
	Suspend(ctx context.Context, req SuspendRequest) (*Suspended, error)
	Ports(ctx context.Context) ([]Port, error)
	Publish(ctx context.Context, req PublishRequest) (*Port, error)
	Unpublish(ctx context.Context, which string) (*Port, error)
	AutoPublish(ctx context.Context, on bool) error
	ReloadSecrets(ctx context.Context) (*SecretsReloaded, error)
	Learn(ctx context.Context, req LearnRequest, send func(*Learning) error) error
	ToolCalls(ctx context.Context, req ToolCallsRequest) error
	Wake(ctx context.Context) error
}

// Unimplemented answers every call with CodeUnimplemented; a stand-in
// embeds it and implements only the calls it serves.
type Unimplemented struct{}

func unimplemented(c Call) error {
	return Errorf(CodeUnimplemented, "this hostd does not serve %s", c)
}

func (Unimplemented) Status(context.Context) (*Status, error) { return nil, unimplemented(CallStatus) }
func (Unimplemented) Stop(context.Context, StopRequest) error { return unimplemented(CallStop) }
func (Unimplemented) SetPolicy(context.Context, json.RawMessage) error {
	return unimplemented(CallSetPolicy)
}
func (Unimplemented) CloseSession(context.Context, string) (*SessionUsage, error) {
	return nil, unimplemented(CallCloseSession)
}
func (Unimplemented) Suspend(context.Context, SuspendRequest) (*Suspended, error) {
	return nil, unimplemented(CallSuspend)
}
func (Unimplemented) Ports(context.Context) ([]Port, error) { return nil, unimplemented(CallPorts) }
func (Unimplemented) Publish(context.Context, PublishRequest) (*Port, error) {
	return nil, unimplemented(CallPublish)
}
func (Unimplemented) Unpublish(context.Context, string) (*Port, error) {
	return nil, unimplemented(CallUnpublish)
}
func (Unimplemented) AutoPublish(context.Context, bool) error {
	return unimplemented(CallAutoPublish)
}
func (Unimplemented) ReloadSecrets(context.Context) (*SecretsReloaded, error) {
	return nil, unimplemented(CallReloadSecrets)
}
func (Unimplemented) Events(context.Context, func(*Event) error) error {
	return unimplemented(CallEvents)
}
func (Unimplemented) OpenSession(context.Context, OpenSessionRequest, func(*Session) error) error {
	return unimplemented(CallOpenSession)
}
func (Unimplemented) Learn(context.Context, LearnRequest, func(*Learning) error) error {
	return unimplemented(CallLearn)
}
func (Unimplemented) ToolCalls(context.Context, ToolCallsRequest) error {
	return unimplemented(CallToolCalls)
}
func (Unimplemented) Wake(context.Context) error { return unimplemented(CallWake) }

// WriteTimeout bounds each reply line's write: a client that stops
// reading a stream (its socket buffer full) is dropped then, instead of
// holding the call's goroutine.
const WriteTimeout = 30 * time.Second

// Server serves a Handler, one call per connection.
type Server struct {
	h Handler
	// OnAcceptError, when set, hears of Accept failing and recovering
	// (see acceptloop.Serve).
	OnAcceptError func(err error, failures int)
	// RequestTimeout and WriteTimeout, when not zero, replace the
	// package's (tests shorten them).
	RequestTimeout, WriteTimeout time.Duration

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	shut  bool
	calls sync.WaitGroup
}

// NewServer is a server of h.
func NewServer(h Handler) *Server { return &Server{h: h, conns: map[net.Conn]struct{}{}} }

// Serve accepts connections on ln until Shutdown (it then returns nil) or
// an Accept error that retrying cannot mend.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	return acceptloop.Serve(ln, s.serveConn, s.OnAcceptError)
}

// Shutdown stops accepting, then waits for the calls in flight to end
// (the handler's to end them: hostd ends its streams first); when ctx
// ends before they have, it closes their connections, which cancels
// them, and waits for them to return.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.shut = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.calls.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}

// Close stops the server and cuts every call at once.
func (s *Server) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return false
	}
	s.conns[c] = struct{}{}
	s.calls.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.calls.Done()
}

// serveConn reads the connection's one request, within RequestTimeout
// and MaxRequest bytes, and answers it. The request is never quoted back
// nor logged: an open_session request holds an API key.
func (s *Server) serveConn(c net.Conn) {
	if !s.track(c) {
		c.Close()
		return
	}
	defer s.untrack(c)
	readTimeout, writeTimeout := or(s.RequestTimeout, RequestTimeout), or(s.WriteTimeout, WriteTimeout)
	send := func(r *Reply) error {
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		return writeLine(c, r)
	}
	c.SetReadDeadline(time.Now().Add(readTimeout))
	// The limit makes a line one byte too long an error at once, rather
	// than a wait for the rest of a buffer that never comes.
	line, err := readLine(bufio.NewReaderSize(io.LimitReader(c, MaxRequest+1), 4<<10), MaxRequest)
	switch {
	case errors.Is(err, errTooLong):
		send(errorReply(Errorf(CodeInvalidArgument, "the request is longer than %d bytes; hostd reads no more", MaxRequest)))
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		send(errorReply(Errorf(CodeInvalidArgument, "no request within %s of connecting", readTimeout)))
		return
	case err != nil:
		return // the client went away
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		// Not err itself: a syntax error quotes the request's bytes.
		send(errorReply(Errorf(CodeInvalidArgument, "the request is not one JSON object of hostd's control API")))
		return
	}
	c.SetReadDeadline(time.Time{})
	// The client sends nothing after its request: a read that returns
	// means it closed its side (or broke the protocol), which cancels
	// the call. It returns at the latest when untrack closes c.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		var b [1]byte
		c.Read(b[:])
		cancel()
	}()
	final, err := s.dispatch(ctx, &req, send)
	if err != nil {
		final = errorReply(err)
	}
	send(final)
}

// dispatch runs the call and returns its last line.
func (s *Server) dispatch(ctx context.Context, req *Request, send func(*Reply) error) (*Reply, error) {
	done := &Reply{Done: true}
	switch req.Call {
	case CallStatus:
		st, err := s.h.Status(ctx)
		return &Reply{Status: st, Done: true}, err
	case CallStop:
		var r StopRequest
		if req.Stop != nil {
			r = *req.Stop
		}
		return done, s.h.Stop(ctx, r)
	case CallEvents:
		return done, s.h.Events(ctx, func(ev *Event) error { return send(&Reply{Event: ev}) })
	case CallSetPolicy:
		return done, s.h.SetPolicy(ctx, req.Policy)
	case CallOpenSession:
		if req.OpenSession == nil {
			return nil, Errorf(CodeInvalidArgument, "open_session without its credential")
		}
		return done, s.h.OpenSession(ctx, *req.OpenSession, func(ss *Session) error { return send(&Reply{Session: ss}) })
	case CallCloseSession:
		u, err := s.h.CloseSession(ctx, req.SessionID)
		return &Reply{SessionUsage: u, Done: true}, err
	case CallSuspend:
		var r SuspendRequest
		if req.Suspend != nil {
			r = *req.Suspend
		}
		sus, err := s.h.Suspend(ctx, r)
		return &Reply{Suspended: sus, Done: true}, err
	case CallPorts:
		ports, err := s.h.Ports(ctx)
		return &Reply{Ports: ports, Done: true}, err
	case CallPublish:
		if req.Publish == nil {
			return nil, Errorf(CodeInvalidArgument, "publish without its port")
		}
		return onePort(s.h.Publish(ctx, *req.Publish))
	case CallUnpublish:
		return onePort(s.h.Unpublish(ctx, req.Unpublish))
	case CallAutoPublish:
		if req.AutoPublish == nil {
			return nil, Errorf(CodeInvalidArgument, "auto_publish without on or off")
		}
		return done, s.h.AutoPublish(ctx, *req.AutoPublish)
	case CallReloadSecrets:
		r, err := s.h.ReloadSecrets(ctx)
		return &Reply{SecretsReloaded: r, Done: true}, err
	case CallLearn:
		var r LearnRequest
		if req.Learn != nil {
			r = *req.Learn
		}
		return done, s.h.Learn(ctx, r, func(l *Learning) error { return send(&Reply{Learning: l}) })
	case CallWake:
		return done, s.h.Wake(ctx)
	case CallToolCalls:
		if req.ToolCalls == nil {
			return nil, Errorf(CodeInvalidArgument, "tool_calls without its calls")
		}
		return done, s.h.ToolCalls(ctx, *req.ToolCalls)
	}
	name := string(req.Call)
	if len(name) > 32 {
		name = name[:32] + "…"
	}
	return nil, Errorf(CodeUnimplemented, "hostd does not know the call %q; is it older than this client? Restart the instance to run the new hostd", name)
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// onePort is the reply of a call that answers one port.
func onePort(p *Port, err error) (*Reply, error) {
	if err != nil || p == nil {
		return nil, err
	}
	return &Reply{Ports: []Port{*p}, Done: true}, nil
}
