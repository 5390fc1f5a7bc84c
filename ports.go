package cowork

import (
	"context"

	"github.com/coworkhq/cowork/hostd/controlwire"
)

// Port is a guest TCP or UDP port (Proto "udp") reachable on the host:
// HostAddr (as bound) to GuestPort; Config says it is the instance's config's (init --publish),
// there at every start, the others lasting while the VM runs.
type Port = controlwire.Port

// ErrNoSuchPort is an Unpublish of a port that is not published.
var ErrNoSuchPort = controlwire.ErrNotFound

// Ports lists the running instance's published ports.
func (i *Instance) Ports(ctx context.Context) ([]Port, error) {
	c, err := i.Client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.api.Ports(ctx)
}

// Publish makes the running guest's TCP port guestPort reachable at
// hostAddr (IP:PORT; port 0 takes a free one) until the VM stops, and
// says where it was bound. Connections to it are the host's into the
// guest: the network policy does not apply to them, and the audit log
// records the publish, not each connection.
func (i *Instance) Publish(ctx context.Context, hostAddr string, guestPort int) (Port, error) {
	return i.publish(ctx, controlwire.PublishRequest{HostAddr: hostAddr, GuestPort: guestPort})
}

// PublishUDP is Publish for the guest's UDP port guestPort: each host peer
// gets a flow of its own into the guest (64 at once), which ends after
// 90 s without a datagram.
func (i *Instance) PublishUDP(ctx context.Context, hostAddr string, guestPort int) (Port, error) {
	return i.publish(ctx, controlwire.PublishRequest{HostAddr: hostAddr, GuestPort: guestPort, Proto: "udp"})
}

// PublishPort publishes p again as it was (a Port that Ports listed).
func (i *Instance) PublishPort(ctx context.Context, p Port) (Port, error) {
	return i.publish(ctx, controlwire.PublishRequest{HostAddr: p.HostAddr, GuestPort: p.GuestPort, Proto: p.Proto})
}

func (i *Instance) publish(ctx context.Context, req controlwire.PublishRequest) (Port, error) {
	if err := i.LocalOnly(OpPublish); err != nil {
		return Port{}, err
	}
	c, err := i.Client()
	if err != nil {
		return Port{}, err
	}
	defer c.Close()
	return c.api.Publish(ctx, req)
}

// AutoPublish starts (on) or stops following the running guest's
// listening sockets: while on, each TCP and UDP port of 1024 and up the
// guest listens on, on every address or its own, is published at the
// same number on 127.0.0.1 (unless this machine uses it), and taken back
// when the guest stops listening; off takes them all back. It lasts until
// the VM stops or is suspended.
func (i *Instance) AutoPublish(ctx context.Context, on bool) error {
	if err := i.LocalOnly(OpPublish); err != nil {
		return err
	}
	c, err := i.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.api.AutoPublish(ctx, on)
}

// Unpublish takes back the port published at which: a host address, a
// host port, or a guest port published once, with "/udp" or "/tcp" after
// it when a TCP and a UDP port share it. Its connections are cut.
func (i *Instance) Unpublish(ctx context.Context, which string) (Port, error) {
	c, err := i.Client()
	if err != nil {
		return Port{}, err
	}
	defer c.Close()
	return c.api.Unpublish(ctx, which)
}
