package guestagent

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// The lent SSH agent (cowork --ssh-agent): the agent listens on a unix
// socket in the guest and carries each connection to the gateway's port,
// where hostd serves the host's agent (hostd/sshagent); every exec gets
// SSH_AUTH_SOCK pointing at the socket. The keys stay on the host: what
// crosses is the agent protocol, which hostd judges and audits.

// defaultSSHAgentSocket is the guest's SSH_AUTH_SOCK.
const defaultSSHAgentSocket = "/run/cowork/ssh-agent.sock"

// maxSSHAgentConns bounds the connections carried at once.
const maxSSHAgentConns = 64

// sshAgent is the listener, while the agent is lent.
type sshAgent struct {
	mu   sync.Mutex
	ln   net.Listener
	sock string
}

// sshAgentSocket is the socket an exec's SSH_AUTH_SOCK names, "" when no
// agent is lent.
func (s *Server) sshAgentSocket() string {
	s.ssh.mu.Lock()
	defer s.ssh.mu.Unlock()
	return s.ssh.sock
}

// lendSSHAgent listens on the socket and forwards to addr (IP:port, the
// host's side), or, with addr empty, stops. Called again with an address,
// it forwards there from then on.
func (s *Server) lendSSHAgent(addr string) (string, error) {
	a := &s.ssh
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln != nil {
		a.ln.Close()
		a.ln, a.sock = nil, ""
	}
	if addr == "" {
		return "", nil
	}
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return "", refusef(agentcall.KindInvalid, "ssh_agent: %q is no IP:port", addr)
	}
	sock := s.opts.SSHAgentSocket
	if sock == "" {
		sock = defaultSSHAgentSocket
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return "", refusef(agentcall.KindFailed, "ssh_agent: %v", err)
	}
	_ = os.Remove(sock) // one left from before a resume, or a crash
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return "", refusef(agentcall.KindFailed, "ssh_agent: %v", err)
	}
	// Any guest user may use it, as a forwarded agent's socket is theirs
	// to use: the guest's processes can reach the gateway's port anyway.
	if err := os.Chmod(sock, 0o666); err != nil {
		ln.Close()
		return "", refusef(agentcall.KindFailed, "ssh_agent: %v", err)
	}
	a.ln, a.sock = ln, sock
	go s.carrySSHAgent(ln, addr)
	s.log.Info("lending the host's SSH agent", "socket", sock, "to", addr)
	return sock, nil
}

// carrySSHAgent carries each connection to addr until ln closes.
func (s *Server) carrySSHAgent(ln net.Listener, addr string) {
	slots := make(chan struct{}, maxSSHAgentConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("ssh agent socket", "err", err)
			}
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close() // too many at once
			continue
		}
		go func() {
			defer func() { <-slots }()
			defer c.Close()
			up, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				s.log.Warn("the host's SSH agent", "err", err)
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(up, c)
				up.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			io.Copy(c, up)
			c.Close()
			<-done
		}()
	}
}
