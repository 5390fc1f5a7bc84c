// Package agentrpc is hostd's gRPC client of the guest agent for what is
// not an exec: Info, SetTime, Provisioning and Shutdown. Only hostd needs
// these, so gRPC stays out of the CLI, which runs commands through
// agentclient's exec protocol on the same channel.
package agentrpc

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/hostd/agentclient"
)

// Client is a gRPC connection to one agent, safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	api  agentpb.AgentClient
}

// New returns a client that dials lazily through d.
func New(d agentclient.Dialer) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///cowork-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d(ctx) }),
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

// Close releases the connection.
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
