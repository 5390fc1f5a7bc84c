// Package agentclient runs commands in the guest through its agent. It
// takes a dial function, so the same client works over hostd's relay
// socket, a yamux stream, vsock, or a unix socket in tests.
//
// It speaks the exec protocol (internal/execwire), one exec at a time per
// connection, and imports neither gRPC nor protobuf: the CLI links it, and
// its start-up is what a user waits for. hostd's other calls to the agent
// (Info, SetTime, Provisioning, Shutdown) are hostd/agentrpc's.
package agentclient

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/coworkhq/cowork/internal/execwire"
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

// maxIdle is how many idle connections a Client keeps for its next execs.
const maxIdle = 4

// readBuffer is each connection's read buffer: frame headers and small
// frames come through it; large payloads are read past it, straight into
// the output buffer.
const readBuffer = 32 << 10

// Client runs execs on one agent. It is safe for concurrent use; each
// running Exec has a connection of its own, and a finished one leaves its
// connection for the next (up to maxIdle kept).
type Client struct {
	dial Dialer

	mu     sync.Mutex
	idle   []*conn
	active map[*conn]struct{}
	closed bool
}

// conn is one exec connection.
type conn struct {
	c        net.Conn
	br       *bufio.Reader
	r        *execwire.Reader
	prefaced bool // the preface went out
}

// New returns a client that dials through d when it first needs to.
func New(d Dialer) (*Client, error) {
	return &Client{dial: d, active: map[*conn]struct{}{}}, nil
}

// Close closes every connection: running Execs end with an error, and
// the agent kills their processes.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, cn := range c.idle {
		cn.c.Close()
	}
	c.idle = nil
	for cn := range c.active {
		cn.c.Close()
	}
	return nil
}

// get returns an idle connection (reused true) or dials a new one.
func (c *Client) get(ctx context.Context) (cn *conn, reused bool, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false, errClosed
	}
	if n := len(c.idle); n > 0 {
		cn = c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.active[cn] = struct{}{}
		c.mu.Unlock()
		return cn, true, nil
	}
	c.mu.Unlock()
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("connect to the guest agent: %w", err)
	}
	br := bufio.NewReaderSize(nc, readBuffer)
	cn = &conn{c: nc, br: br, r: execwire.NewReader(br, agentLimits)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		nc.Close()
		return nil, false, errClosed
	}
	c.active[cn] = struct{}{}
	return cn, false, nil
}

// put gives back a connection after an exec: kept for the next one when
// reusable, else closed.
func (c *Client) put(cn *conn, reusable bool) {
	c.mu.Lock()
	delete(c.active, cn)
	// Bytes already waiting after the exit are frames the agent sent
	// after it: the connection is out of step, and not used again.
	if reusable && !c.closed && len(c.idle) < maxIdle && cn.br.Buffered() == 0 {
		c.idle = append(c.idle, cn)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	cn.c.Close()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
