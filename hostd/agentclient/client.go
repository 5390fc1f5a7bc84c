// Package agentclient talks to the guest agent from the host. It takes a
// dial function, so the same client works over hostd's relay socket, a
// yamux stream, vsock, or a unix socket in tests.
package agentclient

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/coworkhq/cowork/guestagent/agentpb"
)

// Dialer opens a new byte stream to an agent.
type Dialer func(ctx context.Context) (net.Conn, error)

// UnixDialer dials the unix socket at path.
func UnixDialer(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// ParseAddress turns a user-given agent address into a Dialer. It accepts
// unix:///path/to/socket or a plain absolute path.
func ParseAddress(addr string) (Dialer, error) {
	switch {
	case strings.HasPrefix(addr, "unix://"):
		path := strings.TrimPrefix(addr, "unix://")
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("agent address %q: want unix:///ABSOLUTE/PATH", addr)
		}
		return UnixDialer(path), nil
	case strings.HasPrefix(addr, "/"):
		return UnixDialer(addr), nil
	default:
		return nil, fmt.Errorf("agent address %q: want unix:///path/to/agent.sock", addr)
	}
}

// Client is a connection to one agent. It is safe for concurrent use; each
// Exec is its own stream on the shared connection.
type Client struct {
	conn *grpc.ClientConn
	api  agentpb.AgentClient
}

// New returns a client that dials lazily through d.
func New(d Dialer) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///cowork-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d(ctx) }),
		grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(4<<20),
		grpc.WithReadBufferSize(256<<10),
		grpc.WithWriteBufferSize(256<<10),
		// A channel whose far end vanished without closing (an agent killed
		// behind a relay) is noticed by pings, not by waiting forever.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		// A new channel's first frames queue behind the streams already
		// busy on the guest's link; under load (64 streams of 16 MiB from an
		// emulated guest) that took over gRPC's default 20 s. A dead agent
		// is reported at once by the relay instead.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: time.Minute}),
	)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, api: agentpb.NewAgentClient(conn)}, nil
}

// Close releases the connection; running Execs end, and their processes
// are killed by the agent.
func (c *Client) Close() error { return c.conn.Close() }

// Info asks the agent who it is and how the guest is doing.
func (c *Client) Info(ctx context.Context) (*agentpb.InfoResponse, error) {
	return c.api.Info(ctx, &agentpb.InfoRequest{})
}

// SetTime sets the guest clock to t and returns how far off it was.
func (c *Client) SetTime(ctx context.Context, t time.Time) (time.Duration, error) {
	r, err := c.api.SetTime(ctx, &agentpb.SetTimeRequest{UnixNano: t.UnixNano()})
	if err != nil {
		return 0, err
	}
	return time.Duration(r.SkewNano), nil
}

// Provisioning follows the guest's provisioning: the stream carries the
// status at once, then each change, and ends after the first that is not
// RUNNING. An agent older than the call fails the first Recv with
// codes.Unimplemented.
func (c *Client) Provisioning(ctx context.Context) (agentpb.Agent_ProvisioningClient, error) {
	return c.api.Provisioning(ctx, &agentpb.ProvisioningRequest{})
}

// Shutdown asks the guest to sync and power off.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.api.Shutdown(ctx, &agentpb.ShutdownRequest{})
	return err
}
