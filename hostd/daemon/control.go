package daemon

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
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
	var st syscall.Stat_t
	if syscall.Stat(d.paths.Disk(), &st) == nil {
		r.DiskUsedBytes = st.Blocks * 512
	}
	d.mu.Lock()
	r.Ready, r.AgentVersion, r.BootId = d.ready, d.info.version, d.info.bootID
	if d.agent != nil {
		r.GuestIp = netstack.GuestIP
	}
	vm, started := d.vm, d.started
	d.mu.Unlock()
	if vm != nil {
		r.State = string(vm.State())
		r.StartedUnixNano = started.UnixNano()
		r.Backend, r.Accelerator = describe(vm)
		if err := vm.Err(); err != nil {
			r.Error = err.Error()
		}
	}
	return r, nil
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
