package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// replyTimeout bounds each write of a reply: a host that stops reading
// does not hold the call's goroutine forever.
const replyTimeout = 30 * time.Second

// refusal is a call or exec start the agent refuses: its kind
// (agentcall.Kind* or execwire.Kind*, which share their words) and its
// message, worded for the person who sent it.
type refusal struct {
	kind, msg string
}

func (e *refusal) Error() string { return e.msg }

func refusef(kind, format string, args ...any) error {
	return &refusal{kind, fmt.Sprintf(format, args...)}
}

// kindOf is err's kind: its refusal's, else failed.
func kindOf(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.kind
	}
	return agentcall.KindFailed
}

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
			s.reply(c, errorReply(&refusal{agentcall.KindInvalid, "read the request: " + err.Error()}))
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
	case agentcall.MethodSSHAgent:
		sock, err := s.lendSSHAgent(req.Addr)
		if err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{SSHAgent: &agentcall.SSHAgentReply{Socket: sock}})
	case agentcall.MethodSecrets:
		r, err := s.setSecrets(req.Env, req.CA)
		if err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{Secrets: r})
	case agentcall.MethodListeners:
		r, err := listeners(s.share.procRoot)
		if err != nil {
			s.reply(c, errorReply(refusef(agentcall.KindFailed, "listeners: %v", err)))
			return
		}
		s.reply(c, &agentcall.Reply{Listeners: r})
	case agentcall.MethodSocketOwners:
		if len(req.Sockets) > agentcall.MaxSocketQueries {
			s.reply(c, errorReply(refusef(agentcall.KindInvalid, "%d sockets in one call; at most %d", len(req.Sockets), agentcall.MaxSocketQueries)))
			return
		}
		r, err := s.owners.lookup(req.Sockets)
		if err != nil && len(r.Owners) == 0 {
			s.reply(c, errorReply(refusef(agentcall.KindFailed, "socket owners: %v", err)))
			return
		}
		s.reply(c, &agentcall.Reply{SocketOwners: r})
	case agentcall.MethodShareRelease:
		r, err := s.shareRelease(req.Path, req.Force)
		if err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{ShareRelease: r})
	case agentcall.MethodShareMount:
		// A mount may wait for its device for a while: it stops when the
		// host gives up and closes its side (it sends nothing more).
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			io.Copy(io.Discard, c)
			cancel()
		}()
		if err := s.shareMount(ctx, req.Tag, req.Path, req.ReadOnly); err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{ShareMount: &agentcall.ShareMountReply{}})
	case agentcall.MethodShareEject:
		r, err := s.shareEject()
		if err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{ShareEject: r})
	case agentcall.MethodStartUnits:
		// systemctl waits for the units; the host hanging up stops it.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			io.Copy(io.Discard, c)
			cancel()
		}()
		if err := s.startUnits(ctx, req.Units); err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{StartUnits: &agentcall.StartUnitsReply{}})
	case agentcall.MethodPersonalize:
		r, err := s.personalize(req.Seed, req.Hostname)
		if err != nil {
			s.reply(c, errorReply(err))
			return
		}
		s.reply(c, &agentcall.Reply{Personalize: r})
	default:
		s.reply(c, errorReply(&refusal{agentcall.KindUnimplemented,
			"unknown method " + quoteShort(string(req.Method)) + ": hostd and this agent are from different builds"}))
	}
}

// reply writes one line, within replyTimeout.
func (s *Server) reply(c net.Conn, r *agentcall.Reply) error {
	b, err := agentcall.AppendLine(nil, r)
	if err != nil {
		s.log.Error("encode a reply", "err", err)
		b, _ = agentcall.AppendLine(nil, errorReply(&refusal{agentcall.KindFailed, "encode the reply: " + err.Error()}))
	}
	c.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err = c.Write(b)
	return err
}

func errorReply(err error) *agentcall.Reply {
	return &agentcall.Reply{Error: err.Error(), Kind: kindOf(err)}
}

// quoteShort quotes s, cut to a length an error message can carry.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := agentcall.AppendLine(nil, s)
	return string(b[:len(b)-1])
}
