package hostd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/egressrelay"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/hostd/netstack/usage"
	"github.com/coworkhq/cowork/internal/procstat"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// controlServer serves the control API (controlwire) on hostd.sock.
type controlServer struct {
	d *Daemon
}

var _ controlwire.Handler = (*controlServer)(nil)

func (s *controlServer) Status(ctx context.Context) (*controlwire.Status, error) {
	d := s.d
	r := &controlwire.Status{
		Name:        d.name,
		State:       string(machine.Starting),
		HostdPID:    os.Getpid(),
		CPUs:        d.cfg.CPUs,
		MemoryBytes: int64(d.cfg.Memory),
		DiskBytes:   int64(d.cfg.Disk),
		Workspace:   d.cfg.Workspace,
		Arch:        d.cfg.Arch,
	}
	ps := procstat.Self()
	r.HostdProcess = &controlwire.ProcessStats{Goroutines: ps.Goroutines, OpenFDs: ps.OpenFDs, RSSBytes: ps.RSSBytes}
	var st syscall.Stat_t
	if syscall.Stat(d.cfg.DiskPath(d.paths), &st) == nil {
		r.DiskUsedBytes = st.Blocks * 512
	}
	d.mu.Lock()
	r.Ready, r.AgentVersion, r.BootID = d.ready, d.info.version, d.info.bootID
	if b := d.info.boot; b.AgentAnswered > 0 {
		r.Boot = b.phases()
	}
	if d.agent != nil && !d.cfg.Remote() { // a cluster's guest is on the pod network
		r.GuestIP = netstack.GuestIP
	}
	vm, started, net, inSuspend := d.vm, d.started, d.net, d.inSuspend
	if d.standingBy {
		r.State = controlwire.StateStandby
	}
	d.mu.Unlock()
	if net != nil && !d.cfg.Remote() { // the guest is not on this stack
		r.Network = networkStats(net.Stats(), net.FlowStats(), net.ServeFailures())
		r.Network.Learning = net.Learning()
		r.Network.DroppedFrames = net.FramesDropped()
		r.Network.AuditDown = net.AuditDown()
		r.Ports = wirePorts(net.Ports()) // [] rather than null: none is published
		r.AutoPublish = d.autoPublishing()
	}
	if vm != nil {
		r.State = string(vm.State())
		if inSuspend && vm.State() != machine.Stopped {
			r.State = "suspending"
		}
		r.Started = started
		r.Backend, r.Accelerator = describe(vm)
		if err := vm.Err(); err != nil {
			r.Error = termsafe.Text(err.Error()) // quotes QEMU's log
		}
	}
	return r, nil
}

// networkStats is the audit log's sums, the flow limits' state and the
// services that stopped serving.
func networkStats(st audit.Stats, fl netstack.FlowStats, failed []netstack.ServeFailure) *controlwire.NetworkStats {
	n := &controlwire.NetworkStats{Flows: st.Flows, Blocked: st.Blocked, DNSQueries: st.Queries, BytesOut: st.BytesOut, BytesIn: st.BytesIn,
		ActiveFlows: fl.Active, MaxFlows: int64(fl.MaxFlows), RefusedFlows: fl.Refused}
	if fl.Refused > 0 {
		n.FirstRefused, n.LastRefused = fl.FirstRefused, fl.LastRefused
	}
	for _, f := range failed {
		n.ServeFailures = append(n.ServeFailures, controlwire.ServeFailure{Service: f.Service, Error: f.Err, At: f.At})
	}
	return n
}

func (s *controlServer) Stop(ctx context.Context, req controlwire.StopRequest) error {
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	s.d.requestStop(stopRequest{force: req.Force, timeout: timeout})
	if vm := s.d.machine(); vm != nil {
		select {
		case <-vm.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Suspend saves the guest and stops the VM; it answers once the VM is
// gone (hostd exits then), or with the guest running on as before.
func (s *controlServer) Suspend(ctx context.Context, req controlwire.SuspendRequest) (*controlwire.Suspended, error) {
	return s.d.requestSuspend(ctx, req.Force)
}

func (s *controlServer) Events(ctx context.Context, send func(*controlwire.Event) error) error {
	past, next, cancel := s.d.events.subscribe()
	defer cancel()
	for _, ev := range past {
		if err := send(ev); err != nil {
			return err
		}
	}
	for {
		select {
		case ev, ok := <-next:
			if !ok {
				return nil
			}
			if err := send(ev); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *controlServer) network() (*netstack.Stack, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if s.d.net == nil {
		return nil, controlwire.Errorf(controlwire.CodeUnavailable, "the guest network is not up yet; try again once the instance has started")
	}
	return s.d.net, nil
}

func (s *controlServer) SetPolicy(ctx context.Context, policyJSON json.RawMessage) error {
	var p policy.Policy
	if err := json.Unmarshal(policyJSON, &p); err != nil {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "policy: %v", err)
	}
	n, err := s.network()
	if err != nil {
		return err
	}
	if err := n.SetPolicy(p); err != nil {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "%v", err)
	}
	d := s.d
	d.mu.Lock()
	d.cfg.Network.Policy = p
	d.mu.Unlock()
	// The policy alone: the CLI may have changed the rest (a secret).
	_, err = instance.UpdateConfig(d.name, func(c *instance.Config) error { c.Network.Policy = p; return nil })
	if err != nil {
		return controlwire.Errorf(controlwire.CodeInternal, "save the policy: %v", err)
	}
	d.log.Info("network policy changed", "policy", p.Describe())
	return nil
}

// OpenSession opens a relay session that lives as long as the call: it
// ends when the client's connection closes (the client closed it, or its
// process died and its socket closed), when CloseSession closes it, when
// hostd exits, or at its ceiling.
func (s *controlServer) OpenSession(ctx context.Context, req controlwire.OpenSessionRequest, send func(*controlwire.Session) error) error {
	if so, remote, err := s.sessionOpener(); remote {
		if err != nil {
			return err
		}
		return s.openRemoteSession(ctx, so, req, send)
	}
	n, err := s.network()
	if err != nil {
		return err
	}
	prices, err := loadPrices()
	if err != nil {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "%v", err)
	}
	h := egressrelay.Holder{Stack: n, Closing: s.d.closing, Stopped: "the instance stopped", Log: s.d.log}
	return h.Hold(ctx, netstack.SessionRequest{
		Endpoint: req.Endpoint, APIKey: req.APIKey, AuthToken: req.AuthToken,
		TTL: time.Duration(req.TTLSeconds) * time.Second, What: req.What,
		Budget: budget.Limit{Tokens: req.MaxTokensTotal, CostUSD: req.MaxCostUSD}, Prices: prices,
	}, fmt.Sprintf("http://%s:%d", netstack.GatewayIP, netstack.RelayPort), send)
}

// maxLearn is the longest learn mode lasts, whatever the client asks.
const maxLearn = 8 * time.Hour

// Learn keeps the guest network in learn mode while the call lasts (see
// netstack.Stack.Learn): until the client's connection closes, however
// its process ends, hostd exits, or the ceiling. The mode is never saved:
// a hostd that starts again starts with the policy alone.
func (s *controlServer) Learn(ctx context.Context, req controlwire.LearnRequest, send func(*controlwire.Learning) error) error {
	n, err := s.network()
	if err != nil {
		return err
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl <= 0 || ttl > maxLearn {
		ttl = maxLearn
	}
	since := time.Now()
	end := n.Learn()
	defer end()
	s.d.log.Info("learn mode on: what the policy does not list is let through and audited as learned", "ceiling", since.Add(ttl).Format(time.RFC3339))
	if err := send(&controlwire.Learning{Since: since, Until: since.Add(ttl)}); err != nil {
		s.d.log.Info("learn mode off: its client went away before it began")
		return err
	}
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		s.d.log.Info("learn mode off: its client's stream ended")
		return nil
	case <-s.d.closing:
		s.d.log.Info("learn mode off: hostd is exiting")
		return controlwire.Errorf(controlwire.CodeUnavailable, "the instance stopped")
	case <-timer.C:
		s.d.log.Info("learn mode off: it reached its ceiling")
		return controlwire.Errorf(controlwire.CodeExpired, "learn mode reached its ceiling of %s; start it again", ttl)
	}
}

func (s *controlServer) CloseSession(ctx context.Context, id string) (*controlwire.SessionUsage, error) {
	if so, remote, err := s.sessionOpener(); remote {
		if err != nil {
			return nil, err
		}
		return so.CloseSession(ctx, id)
	}
	n, err := s.network()
	if err != nil {
		return nil, err
	}
	return egressrelay.Usage(n.Sessions().Close(id)), nil
}

// loadPrices reads the price table a session's answers are priced with:
// the built-in one, with the user's $COWORK_HOME/prices.json laid over it,
// read at each session so that a change applies at the next ask. A file
// with nonsense in it refuses the session, naming the file and the fix.
func loadPrices() (*usage.Table, error) {
	path, err := instance.PricesFile()
	if err != nil {
		return nil, err
	}
	return usage.Load(path)
}

// serverDrain bounds how long hostd waits for its calls to end before it
// exits: long enough to deliver the last events, not so long that a
// client which stopped reading holds hostd up.
const serverDrain = 5 * time.Second

// stopServing ends the control API on hostd's way out. The last event
// (why the boot failed, or that the VM stopped) must reach the clients
// that follow the boot: the event streams are ended first, then the
// server waits for the calls to end, which delivers what they sent
// before it closes their connections. Closing them at once could drop
// the last event, and the client would see only a broken connection.
func (d *Daemon) stopServing(srv *controlwire.Server) {
	d.events.close()
	if d.closing != nil {
		close(d.closing)
	}
	ctx, cancel := context.WithTimeout(context.Background(), serverDrain)
	defer cancel()
	srv.Shutdown(ctx)
}

// ToolCalls writes an ask's tool calls into the audit log (see
// netstack.Stack.RecordToolCalls).
func (s *controlServer) ToolCalls(ctx context.Context, req controlwire.ToolCallsRequest) error {
	if s.d.cfg != nil && s.d.cfg.Remote() { // the relay, and its audit log, are the cluster's
		return controlwire.Errorf(controlwire.CodeUnimplemented, "the audit log of a guest on a cluster is its egress proxy's")
	}
	n, err := s.network()
	if err != nil {
		return err
	}
	// The request is bounded (controlwire.MaxRequest); RecordToolCalls
	// refuses more calls than it takes.
	calls := make([]netstack.ToolCall, len(req.Calls))
	for i, c := range req.Calls {
		calls[i] = netstack.ToolCall{ID: c.ID, Name: c.Name, From: c.From, To: c.To}
	}
	if err := n.RecordToolCalls(req.Session, calls); err != nil {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "%v", err)
	}
	return nil
}
