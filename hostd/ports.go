package hostd

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
)

// Ports lists the guest ports published on the host: the config's and
// those published since the VM started.
func (s *controlServer) Ports(ctx context.Context) ([]controlwire.Port, error) {
	n, err := s.network()
	if err != nil {
		return nil, err
	}
	return wirePorts(n.Ports()), nil
}

// Publish makes a guest TCP or UDP port reachable on the host until the VM
// stops (the netstack writes it to the audit log).
func (s *controlServer) Publish(ctx context.Context, req controlwire.PublishRequest) (*controlwire.Port, error) {
	host, port, err := net.SplitHostPort(req.HostAddr)
	if err != nil || net.ParseIP(host) == nil {
		return nil, controlwire.Errorf(controlwire.CodeInvalidArgument, "host address %q: want IP:PORT", req.HostAddr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return nil, controlwire.Errorf(controlwire.CodeInvalidArgument, "host port %q: want 0-65535", port)
	}
	if req.GuestPort < 1 || req.GuestPort > 65535 {
		return nil, controlwire.Errorf(controlwire.CodeInvalidArgument, "guest port %d: want 1-65535", req.GuestPort)
	}
	if req.Proto != "" && req.Proto != "tcp" && req.Proto != netstack.UDP {
		return nil, controlwire.Errorf(controlwire.CodeInvalidArgument, "protocol %q: want tcp or udp", req.Proto)
	}
	n, err := s.network()
	if err != nil {
		return nil, err
	}
	publish := n.Publish
	if req.Proto == netstack.UDP {
		publish = n.PublishUDP
	}
	p, err := publish(req.HostAddr, req.GuestPort)
	if err != nil {
		return nil, controlwire.Errorf(controlwire.CodeFailedPrecondition, "%v", err)
	}
	s.d.log.Info("published a guest port", "host", p.HostAddr, "guest_port", p.GuestPort, "proto", p.Proto)
	w := wirePort(p)
	return &w, nil
}

// Unpublish takes a published port back, cutting its connections.
func (s *controlServer) Unpublish(ctx context.Context, which string) (*controlwire.Port, error) {
	n, err := s.network()
	if err != nil {
		return nil, err
	}
	p, err := n.Unpublish(which)
	switch {
	case errors.Is(err, netstack.ErrNoSuchPort):
		return nil, controlwire.Errorf(controlwire.CodeNotFound, "%v", err)
	case err != nil:
		return nil, controlwire.Errorf(controlwire.CodeInvalidArgument, "%v", err)
	}
	s.d.log.Info("took a published guest port back", "host", p.HostAddr, "guest_port", p.GuestPort)
	if s.d.autoPublishing() {
		s.d.auto.userRemoved(p) // not published again while the guest listens
	}
	w := wirePort(p)
	return &w, nil
}

func wirePort(p netstack.Port) controlwire.Port {
	return controlwire.Port{HostAddr: p.HostAddr, GuestPort: p.GuestPort, Proto: p.Proto, Config: p.Config, Auto: p.Auto}
}

func wirePorts(ps []netstack.Port) []controlwire.Port {
	out := make([]controlwire.Port, len(ps))
	for i, p := range ps {
		out[i] = wirePort(p)
	}
	return out
}
