// Package agentrpc is hostd's client of the guest agent for what is not
// an exec: Info, SetTime, Provisioning, Shutdown, ShareRelease and
// ShareMount, in the agent's call protocol (internal/agentcall). The CLI runs commands through
// agentclient's exec protocol on the same channel and needs none of this.
//
// Each call dials a channel of its own (a yamux stream or a vsock
// connection: cheap) and closes it when it ends. The guest is hostile:
// every call is bounded in time (the caller's deadline, or callTimeout)
// and every answer in size, and a reply that is not what the call expects
// is a *ProtocolError.
package agentrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// callTimeout bounds a call whose context has no deadline of its own.
const callTimeout = 30 * time.Second

// shareMountTimeout bounds a ShareMount whose context has no deadline:
// the agent waits up to agentcall.ShareMountWait for the share's device.
const shareMountTimeout = agentcall.ShareMountWait + 10*time.Second

// provisioningIdle is how long a provisioning call may go without a line
// before hostd takes its channel for dead: the agent repeats its status
// every agentcall.ProvisioningHeartbeat, so only a channel whose far end
// vanished without closing (an agent killed behind a relay) stays silent
// this long. It replaces gRPC's keepalive pings.
const provisioningIdle = 4 * agentcall.ProvisioningHeartbeat

// Client calls one agent; it holds no connection between calls, and is
// safe for concurrent use.
type Client struct {
	dial         agentclient.Dialer
	idle         time.Duration // provisioningIdle; tests shorten it
	mountTimeout time.Duration // shareMountTimeout; tests shorten it
}

// New returns a client that dials through d for each call.
func New(d agentclient.Dialer) (*Client, error) {
	return &Client{dial: d, idle: provisioningIdle, mountTimeout: shareMountTimeout}, nil
}

// Close releases nothing: a call closes its own channel. It is here so
// that a Client is closed as it always was.
func (c *Client) Close() error { return nil }

// RefusedError is a call the agent answered with an error: its kind
// (agentcall.Kind*) and its words, made one printable line.
type RefusedError struct {
	Method agentcall.Method
	Kind   string
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the guest agent refused %s (%s): %s", e.Method, e.Kind, e.Msg)
}

// IsUnimplemented reports whether err is an agent that does not know the
// call: one older than this hostd.
func IsUnimplemented(err error) bool {
	var e *RefusedError
	return errors.As(err, &e) && e.Kind == agentcall.KindUnimplemented
}

// ProtocolError is an agent that broke the call protocol: a line too
// long, not JSON, or not the reply the call expects.
type ProtocolError struct {
	Method agentcall.Method
	Msg    string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("the guest agent broke the call protocol in %s (%s); restart the instance so that it runs this cowork's agent", e.Method, e.Msg)
}

// call is one call's channel.
type call struct {
	method agentcall.Method
	ctx    context.Context
	nc     net.Conn
	r      *agentcall.LineReader
	stop   func() bool // undoes the close on ctx's end
}

// open dials a channel, within dialTimeout, and sends req on it. The
// channel is closed when ctx ends, and its deadline is ctx's.
func (c *Client) open(ctx context.Context, dialTimeout time.Duration, req agentcall.Request) (*call, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	nc, err := c.dial(dctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil && dctx.Err() != nil {
			err = fmt.Errorf("no channel within %v: %w", dialTimeout, err)
		}
		return nil, fmt.Errorf("connect to the guest agent: %w", err)
	}
	cl := &call{method: req.Method, ctx: ctx, nc: nc, r: agentcall.NewLineReader(nc)}
	cl.stop = context.AfterFunc(ctx, func() { nc.Close() })
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	b, err := agentcall.AppendLine([]byte(agentcall.Preface), &req)
	if err == nil {
		_, err = nc.Write(b)
	}
	if err != nil {
		cl.close()
		return nil, cl.fail(err)
	}
	return cl, nil
}

func (cl *call) close() {
	cl.stop()
	cl.nc.Close()
}

// fail words err, from the channel, for the caller.
func (cl *call) fail(err error) error {
	dl, ok := cl.ctx.Deadline()
	switch {
	case cl.ctx.Err() != nil:
		return fmt.Errorf("guest agent %s: %w", cl.method, context.Cause(cl.ctx))
	case errors.Is(err, os.ErrDeadlineExceeded) && ok && !time.Now().Before(dl):
		// The channel's deadline is ctx's, and passed a moment before ctx
		// noticed.
		return fmt.Errorf("guest agent %s: %w", cl.method, context.DeadlineExceeded)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("guest agent %s: no answer in time (the guest is busy or its agent hangs): %w", cl.method, err)
	}
	return fmt.Errorf("guest agent %s: %w", cl.method, err)
}

// next reads one reply line: a refusal is a *RefusedError, a line that is
// no reply a *ProtocolError.
func (cl *call) next() (*agentcall.Reply, error) {
	var rep agentcall.Reply
	if err := cl.r.Read(&rep); err != nil {
		var bad *agentcall.BadLineError
		if errors.Is(err, agentcall.ErrLineTooLong) || errors.As(err, &bad) {
			// The decoder's words may quote a byte of the guest's.
			return nil, &ProtocolError{Method: cl.method, Msg: guestWord(err.Error(), 200)}
		}
		return nil, cl.fail(err)
	}
	if rep.Error != "" || rep.Kind != "" {
		return nil, &RefusedError{Method: cl.method, Kind: guestWord(rep.Kind, 32), Msg: guestWord(rep.Error, 512)}
	}
	return &rep, nil
}

// guestWord makes s, from the guest, one printable line of at most n
// bytes.
func guestWord(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return termsafe.Line(s)
}

// once makes a call that answers one line, within callTimeout when ctx
// has no deadline.
func (c *Client) once(ctx context.Context, req agentcall.Request) (*agentcall.Reply, error) {
	return c.onceWithin(ctx, req, callTimeout)
}

// onceWithin makes a call that answers one line, within timeout when ctx
// has no deadline.
func (c *Client) onceWithin(ctx context.Context, req agentcall.Request, timeout time.Duration) (*agentcall.Reply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cl, err := c.open(ctx, callTimeout, req)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	return cl.next()
}

// Info asks the agent who it is and how the guest is doing. The answer is
// the guest's claim: strings and numbers as it sent them.
func (c *Client) Info(ctx context.Context) (*agentcall.Info, error) {
	rep, err := c.once(ctx, agentcall.Request{Method: agentcall.MethodInfo})
	if err != nil {
		return nil, err
	}
	if rep.Info == nil {
		return nil, &ProtocolError{Method: agentcall.MethodInfo, Msg: "a reply without info"}
	}
	return rep.Info, nil
}

// SetTime sets the guest clock to t and returns how far off it was.
func (c *Client) SetTime(ctx context.Context, t time.Time) (time.Duration, error) {
	rep, err := c.once(ctx, agentcall.Request{Method: agentcall.MethodSetTime, UnixNano: t.UnixNano()})
	if err != nil {
		return 0, err
	}
	if rep.SetTime == nil {
		return 0, &ProtocolError{Method: agentcall.MethodSetTime, Msg: "a reply without set_time"}
	}
	return time.Duration(rep.SetTime.SkewNano), nil
}

// Shutdown asks the guest to sync and power off.
func (c *Client) Shutdown(ctx context.Context) error {
	rep, err := c.once(ctx, agentcall.Request{Method: agentcall.MethodShutdown})
	if err != nil {
		return err
	}
	if rep.Shutdown == nil {
		return &ProtocolError{Method: agentcall.MethodShutdown, Msg: "a reply without shutdown"}
	}
	return nil
}

// maxPID bounds a pid from the guest: Linux's PID_MAX_LIMIT on 64 bits.
const maxPID = 1 << 22

// ShareRelease asks the guest to let go of the share mounted at path (the
// guest's mount point, absolute and clean): the agent names the processes
// that use it and, unless some do and force is false, syncs and unmounts
// it (lazily with force: the users lose it). Reply.Unmounted says whether
// it did. The reply is checked and its words made printable; Users and
// More are the guest's claim, for a message, not for a decision beyond
// "in use".
func (c *Client) ShareRelease(ctx context.Context, path string, force bool) (*agentcall.ShareReleaseReply, error) {
	const m = agentcall.MethodShareRelease
	rep, err := c.once(ctx, agentcall.Request{Method: m, Path: path, Force: force})
	if err != nil {
		return nil, err
	}
	r := rep.ShareRelease
	switch {
	case r == nil:
		return nil, &ProtocolError{Method: m, Msg: "a reply without share_release"}
	case len(r.Users) > agentcall.MaxShareUsers:
		return nil, &ProtocolError{Method: m, Msg: fmt.Sprintf("%d users listed, over %d", len(r.Users), agentcall.MaxShareUsers)}
	case r.More < 0 || r.More > maxPID:
		return nil, &ProtocolError{Method: m, Msg: fmt.Sprintf("%d more users", r.More)}
	case r.More > 0 && len(r.Users) < agentcall.MaxShareUsers:
		return nil, &ProtocolError{Method: m, Msg: "more users counted than listed"}
	case r.NotMounted && !r.Unmounted:
		return nil, &ProtocolError{Method: m, Msg: "not mounted yet not unmounted"}
	case !r.Unmounted && len(r.Users) == 0:
		return nil, &ProtocolError{Method: m, Msg: "neither unmounted nor in use"}
	}
	for i := range r.Users {
		u := &r.Users[i]
		if u.PID <= 0 || u.PID > maxPID {
			return nil, &ProtocolError{Method: m, Msg: fmt.Sprintf("a user with pid %d", u.PID)}
		}
		u.Comm = guestWord(u.Comm, 64)
	}
	return r, nil
}

// Personalize asks a forked guest (resumed from another instance's saved
// memory) to make itself its own: seed, agentcall.SeedSize bytes from
// the host's random source, reseeds its kernel's CRNG, and it takes a new
// machine-id, which it returns, and hostname.
func (c *Client) Personalize(ctx context.Context, seed []byte, hostname string) (string, error) {
	const m = agentcall.MethodPersonalize
	rep, err := c.once(ctx, agentcall.Request{Method: m, Seed: seed, Hostname: hostname})
	if err != nil {
		return "", err
	}
	r := rep.Personalize
	switch {
	case r == nil:
		return "", &ProtocolError{Method: m, Msg: "a reply without personalize"}
	case !machineIDRE.MatchString(r.MachineID):
		return "", &ProtocolError{Method: m, Msg: "a machine-id that is not 32 hex digits"}
	}
	return r.MachineID, nil
}

// machineIDRE is a machine-id as machine-id(5) says.
var machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// SSHAgent asks the guest to lend its users the host's SSH agent, served
// at addr (the gateway's SSHAgentPort), or, with addr empty, to stop. It
// returns the guest's SSH_AUTH_SOCK, printable.
func (c *Client) SSHAgent(ctx context.Context, addr string) (string, error) {
	const m = agentcall.MethodSSHAgent
	rep, err := c.once(ctx, agentcall.Request{Method: m, Addr: addr})
	if err != nil {
		return "", err
	}
	if rep.SSHAgent == nil {
		return "", &ProtocolError{Method: m, Msg: "a reply without ssh_agent"}
	}
	return guestWord(rep.SSHAgent.Socket, 108), nil
}

// Secrets gives the guest the secrets' placeholders (env, NAME=VALUE) and
// the CA it is to trust (PEM), or, both empty, takes them back. It
// returns where the guest keeps the CA and its note, printable.
func (c *Client) Secrets(ctx context.Context, env []string, ca string) (caFile, note string, err error) {
	const m = agentcall.MethodSecrets
	rep, err := c.once(ctx, agentcall.Request{Method: m, Env: env, CA: ca})
	if err != nil {
		return "", "", err
	}
	if rep.Secrets == nil {
		return "", "", &ProtocolError{Method: m, Msg: "a reply without secrets"}
	}
	return guestWord(rep.Secrets.CAFile, 256), guestWord(rep.Secrets.Note, 300), nil
}

// StartUnits asks the guest to start systemd units and returns once they
// are up, or with the guest's error (printable, bounded) when one failed.
// ctx bounds the wait: a unit may take a minute to start under emulation.
func (c *Client) StartUnits(ctx context.Context, units ...string) error {
	const m = agentcall.MethodStartUnits
	rep, err := c.onceWithin(ctx, agentcall.Request{Method: m, Units: units}, startUnitsTimeout)
	if err != nil {
		return err
	}
	if rep.StartUnits == nil {
		return &ProtocolError{Method: m, Msg: "a reply without start_units"}
	}
	return nil
}

// startUnitsTimeout bounds StartUnits when ctx has no deadline.
const startUnitsTimeout = 5 * time.Minute

// Listeners asks the guest for its listening sockets. The reply is the
// guest's claim, checked: at most agentcall.MaxListeners entries, each a
// known protocol, a port and an IP address, or a ProtocolError.
func (c *Client) Listeners(ctx context.Context) ([]agentcall.Listener, error) {
	const m = agentcall.MethodListeners
	rep, err := c.once(ctx, agentcall.Request{Method: m})
	if err != nil {
		return nil, err
	}
	r := rep.Listeners
	switch {
	case r == nil:
		return nil, &ProtocolError{Method: m, Msg: "a reply without listeners"}
	case len(r.Ports) > agentcall.MaxListeners:
		return nil, &ProtocolError{Method: m, Msg: fmt.Sprintf("%d listeners, over %d", len(r.Ports), agentcall.MaxListeners)}
	}
	for _, l := range r.Ports {
		if _, err := netip.ParseAddr(l.Addr); err != nil || (l.Proto != "tcp" && l.Proto != "udp") || l.Port < 1 || l.Port > 65535 {
			return nil, &ProtocolError{Method: m, Msg: fmt.Sprintf("a listener %s %.40q port %d", guestWord(l.Proto, 8), l.Addr, l.Port)}
		}
	}
	return r.Ports, nil
}

// SocketOwners asks the guest which processes hold the sockets socks (at
// most agentcall.MaxSocketQueries). The reply is the guest's claim,
// checked for shape: at most as many owners as sockets asked about, each
// naming a socket that was asked about, a pid and uid in range, and
// strings within their bounds, or a ProtocolError. Nothing checks that
// the claim is true: the caller keeps it marked as the guest's.
func (c *Client) SocketOwners(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
	const m = agentcall.MethodSocketOwners
	if len(socks) > agentcall.MaxSocketQueries {
		return nil, fmt.Errorf("%d sockets in one call; at most %d", len(socks), agentcall.MaxSocketQueries)
	}
	rep, err := c.once(ctx, agentcall.Request{Method: m, Sockets: socks})
	if err != nil {
		return nil, err
	}
	r := rep.SocketOwners
	switch {
	case r == nil:
		return nil, &ProtocolError{Method: m, Msg: "a reply without socket_owners"}
	case len(r.Owners) > len(socks):
		return nil, &ProtocolError{Method: m, Msg: fmt.Sprintf("%d owners for %d sockets", len(r.Owners), len(socks))}
	}
	asked := make(map[agentcall.Socket]bool, len(socks))
	for _, s := range socks {
		asked[s] = true
	}
	for _, o := range r.Owners {
		if err := checkOwner(o, asked); err != "" {
			return nil, &ProtocolError{Method: m, Msg: err}
		}
	}
	return r.Owners, nil
}

// checkOwner says what is wrong with a claimed owner, "" when nothing.
func checkOwner(o agentcall.SocketOwner, asked map[agentcall.Socket]bool) string {
	switch {
	case !asked[o.Socket]:
		return fmt.Sprintf("an owner of a socket not asked about: %s port %d peer %.60q", guestWord(o.Proto, 8), o.Port, o.Peer)
	case o.PID < 1 || o.PID > maxPID:
		return fmt.Sprintf("an owner with pid %d", o.PID)
	case o.UID < 0 || o.UID > 1<<32-1:
		return fmt.Sprintf("an owner with uid %d", o.UID)
	case len(o.Exec) > 64 || len(o.Comm) > agentcall.MaxOwnerComm || len(o.Cmd) > agentcall.MaxOwnerCmd:
		return fmt.Sprintf("an owner's strings of %d, %d and %d bytes", len(o.Exec), len(o.Comm), len(o.Cmd))
	}
	return ""
}

// ShareMount asks the guest to mount the virtiofs share tag at path
// (read-only when readOnly), as after a resume with a new share device: the agent waits for the
// device's tag up to agentcall.ShareMountWait, so without a deadline of
// its own the call has shareMountTimeout. The tag already mounted there
// is a success.
func (c *Client) ShareMount(ctx context.Context, tag, path string, readOnly bool) error {
	const m = agentcall.MethodShareMount
	rep, err := c.onceWithin(ctx, agentcall.Request{Method: m, Tag: tag, Path: path, ReadOnly: readOnly}, c.mountTimeout)
	if err != nil {
		return err
	}
	if rep.ShareMount == nil {
		return &ProtocolError{Method: m, Msg: "a reply without share_mount"}
	}
	return nil
}

// ShareEject asks the guest to hand back every virtiofs device it has
// unmounted at once, rather than through its kernel's hotplug driver
// (agentcall.MethodShareEject), and says how many it did. The count is
// the guest's claim: the host believes QEMU, which says what left.
func (c *Client) ShareEject(ctx context.Context) (int, error) {
	const m = agentcall.MethodShareEject
	rep, err := c.once(ctx, agentcall.Request{Method: m})
	if err != nil {
		return 0, err
	}
	if rep.ShareEject == nil {
		return 0, &ProtocolError{Method: m, Msg: "a reply without share_eject"}
	}
	return rep.ShareEject.Ejected, nil
}

// ProvisioningStream is a provisioning call: the status at once, then each
// change, ending after the first that is not running.
type ProvisioningStream struct {
	cl    *call
	idle  time.Duration
	done  bool // closed
	ended bool // the last status came
}

// Provisioning follows the guest's provisioning until ctx ends or the
// stream does; the stream ends on its own after the first status that is
// not running. An agent without the call fails the first Recv with an
// error IsUnimplemented reports.
func (c *Client) Provisioning(ctx context.Context) (*ProvisioningStream, error) {
	cl, err := c.open(ctx, c.idle, agentcall.Request{Method: agentcall.MethodProvisioning})
	if err != nil {
		return nil, err
	}
	return &ProvisioningStream{cl: cl, idle: c.idle}, nil
}

// Recv returns the next status: io.EOF after the last one (or from an
// agent that ended the stream without a final status), an error when the
// channel broke, the call's context ended, or the agent stayed silent
// for provisioningIdle.
func (s *ProvisioningStream) Recv() (*agentcall.ProvisioningStatus, error) {
	cl := s.cl
	switch {
	case s.ended:
		return nil, io.EOF
	case s.done || cl.ctx.Err() != nil:
		s.Close()
		return nil, cl.fail(net.ErrClosed)
	}
	idle := time.Now().Add(s.idle)
	if dl, ok := cl.ctx.Deadline(); ok && dl.Before(idle) {
		idle = dl
	}
	cl.nc.SetReadDeadline(idle)
	rep, err := cl.next()
	if err != nil {
		s.Close()
		return nil, err
	}
	st := rep.Provisioning
	switch {
	case st == nil:
		s.Close()
		return nil, &ProtocolError{Method: cl.method, Msg: "a reply without provisioning"}
	case !st.State.Known():
		s.Close()
		return nil, &ProtocolError{Method: cl.method, Msg: "unknown state " + guestWord(string(st.State), 32)}
	case st.State != agentcall.StateRunning:
		s.ended = true // the last one
		s.Close()
	}
	return st, nil
}

// Close ends the call; the agent stops looking.
func (s *ProvisioningStream) Close() {
	if !s.done {
		s.done = true
		s.cl.close()
	}
}
