package cowork

import (
	"context"

	"github.com/coworkhq/cowork/hostd/controlwire"
)

// Port is a guest TCP port reachable on the host: HostAddr (as bound) to
// GuestPort; Config says it is the instance's config's (init --publish),
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
	c, err := i.Client()
	if err != nil {
		return Port{}, err
	}
	defer c.Close()
	return c.api.Publish(ctx, controlwire.PublishRequest{HostAddr: hostAddr, GuestPort: guestPort})
}

// Unpublish takes back the port published at which: a host address, a
// host port, or a guest port published once. Its connections are cut.
func (i *Instance) Unpublish(ctx context.Context, which string) (Port, error) {
	c, err := i.Client()
	if err != nil {
		return Port{}, err
	}
	defer c.Close()
	return c.api.Unpublish(ctx, which)
}
