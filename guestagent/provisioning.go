package guestagent

import (
	"context"
	"time"

	"github.com/coworkhq/cowork/guestagent/provision"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// provisionPoll is how often a provisioning call looks at the guest by default:
// each look runs systemctl and journalctl, which an emulated guest feels.
const provisionPoll = 2 * time.Second

// provisioningCall sends the guest's provisioning status: at once, then at
// each change, and again every heartbeat while it does not change, until
// it is no longer running, send fails or ctx ends.
func (s *Server) provisioningCall(ctx context.Context, send func(*agentcall.ProvisioningStatus) error) error {
	var last *agentcall.ProvisioningStatus
	var sent time.Time
	for {
		st := s.provision.Read(ctx)
		msg := provisioningStatus(st)
		if last == nil || *msg != *last || time.Since(sent) >= s.opts.ProvisionHeartbeat {
			if err := send(msg); err != nil {
				return err
			}
			last, sent = msg, time.Now()
		}
		if st.State != provision.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.opts.ProvisionPoll):
		}
	}
}

func provisioningStatus(st provision.Status) *agentcall.ProvisioningStatus {
	state := agentcall.StateRunning
	switch st.State {
	case provision.Provisioned:
		state = agentcall.StateProvisioned
	case provision.Failed:
		state = agentcall.StateFailed
	case provision.FinishedUnprovisioned:
		state = agentcall.StateFinishedUnprovisioned
	}
	return &agentcall.ProvisioningStatus{State: state, Step: st.Step, Stage: st.Stage, LastLine: st.LastLine}
}
