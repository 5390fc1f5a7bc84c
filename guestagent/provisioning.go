package guestagent

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/guestagent/provision"
)

// provisionPoll is how often Provisioning looks at the guest by default:
// each look runs systemctl and journalctl, which an emulated guest feels.
const provisionPoll = 2 * time.Second

// Provisioning streams the guest's provisioning status: at once, then at
// each change, until it is no longer running.
func (s *Server) Provisioning(_ *agentpb.ProvisioningRequest, stream agentpb.Agent_ProvisioningServer) error {
	ctx := stream.Context()
	var last *agentpb.ProvisioningStatus
	for {
		st := s.provision.Read(ctx)
		msg := provisioningStatus(st)
		if last == nil || !proto.Equal(msg, last) {
			if err := stream.Send(msg); err != nil {
				return err
			}
			last = msg
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

func provisioningStatus(st provision.Status) *agentpb.ProvisioningStatus {
	state := agentpb.ProvisioningStatus_RUNNING
	switch st.State {
	case provision.Provisioned:
		state = agentpb.ProvisioningStatus_PROVISIONED
	case provision.Failed:
		state = agentpb.ProvisioningStatus_FAILED
	case provision.FinishedUnprovisioned:
		state = agentpb.ProvisioningStatus_FINISHED_UNPROVISIONED
	}
	return &agentpb.ProvisioningStatus{State: state, Step: st.Step, Stage: st.Stage, LastLine: st.LastLine}
}
