package hostd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/procstat"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// controlServer is the gRPC Control service on hostd.sock.
type controlServer struct {
	controlpb.UnimplementedControlServer
	d *Daemon
}

func (s *controlServer) Status(ctx context.Context, _ *controlpb.StatusRequest) (*controlpb.StatusResponse, error) {
	d := s.d
	r := &controlpb.StatusResponse{
		Name:        d.name,
		State:       string(machine.Starting),
		HostdPid:    int32(os.Getpid()),
		Cpus:        int32(d.cfg.CPUs),
		MemoryBytes: int64(d.cfg.Memory),
		DiskBytes:   int64(d.cfg.Disk),
		Workspace:   d.cfg.Workspace,
		Arch:        d.cfg.Arch,
	}
	ps := procstat.Self()
	r.HostdProcess = &controlpb.ProcessStats{Goroutines: int32(ps.Goroutines), OpenFds: int32(ps.OpenFDs), RssBytes: ps.RSSBytes}
	var st syscall.Stat_t
	if syscall.Stat(d.paths.Disk(), &st) == nil {
		r.DiskUsedBytes = st.Blocks * 512
	}
	d.mu.Lock()
	r.Ready, r.AgentVersion, r.BootId = d.ready, d.info.version, d.info.bootID
	if d.agent != nil {
		r.GuestIp = netstack.GuestIP
	}
	vm, started, net := d.vm, d.started, d.net
	d.mu.Unlock()
	if net != nil {
		r.Network = networkStats(net.Stats(), net.FlowStats(), net.ServeFailures())
	}
	if vm != nil {
		r.State = string(vm.State())
		r.StartedUnixNano = started.UnixNano()
		r.Backend, r.Accelerator = describe(vm)
		if err := vm.Err(); err != nil {
			r.Error = termsafe.Text(err.Error()) // quotes QEMU's log; gRPC needs valid UTF-8
		}
	}
	return r, nil
}

// networkStats is the audit log's sums, the flow limits' state and the
// services that stopped serving.
func networkStats(st audit.Stats, fl netstack.FlowStats, failed []netstack.ServeFailure) *controlpb.NetworkStats {
	n := &controlpb.NetworkStats{Flows: st.Flows, Blocked: st.Blocked, DnsQueries: st.Queries, BytesOut: st.BytesOut, BytesIn: st.BytesIn,
		ActiveFlows: fl.Active, MaxFlows: int64(fl.MaxFlows), RefusedFlows: fl.Refused}
	if fl.Refused > 0 {
		n.FirstRefusedUnixNano, n.LastRefusedUnixNano = fl.FirstRefused.UnixNano(), fl.LastRefused.UnixNano()
	}
	for _, f := range failed {
		n.ServeFailures = append(n.ServeFailures, &controlpb.ServeFailure{Service: f.Service, Error: f.Err, UnixNano: f.At.UnixNano()})
	}
	return n
}

func (s *controlServer) Stop(ctx context.Context, req *controlpb.StopRequest) (*controlpb.StopResponse, error) {
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	s.d.requestStop(stopRequest{force: req.Force, timeout: timeout})
	if vm := s.d.machine(); vm != nil {
		select {
		case <-vm.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &controlpb.StopResponse{}, nil
}

func (s *controlServer) Events(_ *controlpb.EventsRequest, stream controlpb.Control_EventsServer) error {
	past, next, cancel := s.d.events.subscribe()
	defer cancel()
	for _, ev := range past {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	for {
		select {
		case ev, ok := <-next:
			if !ok {
				return nil
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (s *controlServer) network() (*netstack.Stack, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if s.d.net == nil {
		return nil, status.Error(codes.Unavailable, "the guest network is not up yet; try again once the instance has started")
	}
	return s.d.net, nil
}

func (s *controlServer) SetPolicy(ctx context.Context, req *controlpb.SetPolicyRequest) (*controlpb.SetPolicyResponse, error) {
	var p policy.Policy
	if err := json.Unmarshal([]byte(req.PolicyJson), &p); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "policy: %v", err)
	}
	n, err := s.network()
	if err != nil {
		return nil, err
	}
	if err := n.SetPolicy(p); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	d := s.d
	d.mu.Lock()
	d.cfg.Network.Policy = p
	err = d.cfg.Save(d.paths.Dir())
	d.mu.Unlock()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "save the policy: %v", err)
	}
	d.log.Info("network policy changed", "policy", p.Describe())
	return &controlpb.SetPolicyResponse{}, nil
}

// OpenSession opens a relay session that lives as long as the call: it
// ends when the client's stream ends (the client cancelled it, or its
// process died and its socket closed), when CloseSession closes it, or at
// its ceiling.
func (s *controlServer) OpenSession(req *controlpb.OpenSessionRequest, stream controlpb.Control_OpenSessionServer) error {
	n, err := s.network()
	if err != nil {
		return err
	}
	sess, err := n.Sessions().Open(req.Endpoint, req.ApiKey, req.AuthToken, time.Duration(req.TtlSeconds)*time.Second)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer n.Sessions().Close(sess.ID)
	log := s.d.log.With("session", sess.ID)
	if err := n.CheckEndpoint(stream.Context(), sess); err != nil {
		log.Warn("relay session refused", "err", err)
		return status.Error(codes.Unavailable, err.Error())
	}
	log.Info("relay session opened", "endpoint", policy.RedactURL(sess.Endpoint.String()), "expires", sess.Expires.Format(time.RFC3339))
	err = stream.Send(&controlpb.OpenSessionResponse{
		SessionId:       sess.ID,
		Placeholder:     sess.Placeholder,
		BaseUrl:         fmt.Sprintf("http://%s:%d", netstack.GatewayIP, netstack.RelayPort),
		ExpiresUnixNano: sess.Expires.UnixNano(),
	})
	if err != nil {
		log.Info("relay session closed: its client went away before it began", "err", err)
		return err
	}
	select {
	case <-stream.Context().Done():
		log.Info("relay session closed: its client's stream ended")
		return nil
	case <-s.d.closing:
		log.Info("relay session closed: hostd is exiting")
		return status.Error(codes.Unavailable, "the instance stopped")
	case <-sess.Done():
	}
	if errors.Is(sess.Err(), netstack.ErrSessionExpired) {
		log.Info("relay session expired", "ceiling", sess.Expires.Format(time.RFC3339))
		return status.Errorf(codes.DeadlineExceeded, "relay session %s reached its ceiling; open a new one", sess.ID)
	}
	log.Info("relay session closed")
	return nil
}

func (s *controlServer) CloseSession(ctx context.Context, req *controlpb.CloseSessionRequest) (*controlpb.CloseSessionResponse, error) {
	n, err := s.network()
	if err != nil {
		return nil, err
	}
	n.Sessions().Close(req.SessionId)
	return &controlpb.CloseSessionResponse{}, nil
}

// serverDrain bounds how long hostd waits for its calls to end before it
// exits: long enough to deliver the last events, not so long that a
// client which stopped reading holds hostd up.
const serverDrain = 5 * time.Second

// stopServing ends the control API on hostd's way out. The last event
// (why the boot failed, or that the VM stopped) must reach the clients
// that follow the boot: the event streams are ended first, then the
// server stops gracefully, which delivers what they sent before it
// closes their connections. Stopping it at once could drop the last
// event, and the client would see only a broken connection.
func (d *Daemon) stopServing(g *grpc.Server) {
	d.events.close()
	if d.closing != nil {
		close(d.closing)
	}
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(serverDrain):
		g.Stop()
		<-done
	}
}
