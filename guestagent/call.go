package guestagent

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// replyTimeout bounds each write of a reply: a host that stops reading
// does not hold the call's goroutine forever.
const replyTimeout = 30 * time.Second

// callError is a call the agent refuses: its kind (agentcall.Kind*) and
// its message.
type callError struct {
	kind, msg string
}

func (e *callError) Error() string { return e.msg }

// ServeCall serves one call connection (agentcall) whose preface has been
// read: it reads the request line, answers, and closes the connection.
func (s *Server) ServeCall(c net.Conn) {
	if !s.addConn(c) {
		c.Close()
		return
	}
	defer s.removeConn(c)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(agentcall.RequestTimeout))
	var req agentcall.Request
	if err := agentcall.NewLineReader(c).Read(&req); err != nil {
		if !errors.Is(err, io.EOF) {
			s.reply(c, errorReply(&callError{agentcall.KindInvalid, "read the request: " + err.Error()}))
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	switch req.Method {
	case agentcall.MethodInfo:
		s.reply(c, &agentcall.Reply{Info: s.info()})
	case agentcall.MethodSetTime:
		r, err := s.setTime(req.UnixNano)
		if err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{SetTime: r})
	case agentcall.MethodShutdown:
		if s.reply(c, &agentcall.Reply{Shutdown: &agentcall.ShutdownReply{}}) == nil {
			s.shutdown()
		}
	case agentcall.MethodProvisioning:
		// The host ends the call by closing its side; it sends nothing
		// more, so a read returns only then.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			io.Copy(io.Discard, c)
			cancel()
		}()
		s.provisioningCall(ctx, func(st *agentcall.ProvisioningStatus) error {
			return s.reply(c, &agentcall.Reply{Provisioning: st})
		})
	default:
		s.reply(c, errorReply(&callError{agentcall.KindUnimplemented,
			"unknown method " + quoteShort(string(req.Method)) + ": this agent serves info, set_time, shutdown and provisioning"}))
	}
}

// reply writes one line, within replyTimeout.
func (s *Server) reply(c net.Conn, r *agentcall.Reply) error {
	b, err := agentcall.AppendLine(nil, r)
	if err != nil {
		s.log.Error("encode a reply", "err", err)
		b, _ = agentcall.AppendLine(nil, errorReply(&callError{agentcall.KindFailed, "encode the reply: " + err.Error()}))
	}
	c.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err = c.Write(b)
	return err
}

func errorReply(err error) *agentcall.Reply {
	var ce *callError
	if errors.As(err, &ce) {
		return &agentcall.Reply{Error: ce.msg, Kind: ce.kind}
	}
	return &agentcall.Reply{Error: err.Error(), Kind: agentcall.KindFailed}
}

// quoteShort quotes s, cut to a length an error message can carry.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := agentcall.AppendLine(nil, s)
	return string(b[:len(b)-1])
}
