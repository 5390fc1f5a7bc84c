package hostd

import (
	"context"
	"net"
	"os"
	"strconv"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
)

// lendSSHAgent has the guest's agent lend its users the host's SSH agent
// (--ssh-agent), which the gateway serves; a guest that cannot, or a host
// without an agent, gets a note.
func (d *Daemon) lendSSHAgent(ctx context.Context) {
	if !d.cfg.SSHAgent {
		return
	}
	if os.Getenv("SSH_AUTH_SOCK") == "" {
		d.events.emit(controlwire.PhaseNote, "--ssh-agent: no SSH agent where the instance started (SSH_AUTH_SOCK is not set); the guest's ssh finds no keys", nil)
	}
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	sock, err := agent.SSHAgent(cctx, net.JoinHostPort(netstack.GatewayIP, strconv.Itoa(netstack.SSHAgentPort)))
	if err != nil {
		d.events.emit(controlwire.PhaseNote, "--ssh-agent: the guest could not take the host's SSH agent", err)
		return
	}
	d.log.Info("lent the guest the host's SSH agent", "guest_socket", sock)
}
