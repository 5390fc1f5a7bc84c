// Package cowork is the Go API to cowork instances: create one, start,
// stop, resize and delete it, set its network policy, ask its status, run
// commands and Claude Code in its guest. It is the one owner of an
// instance's folder and config; each running instance's VM belongs to its
// daemon, cowork-hostd (package hostd), which this package launches and
// then talks to over the instance's control socket. The CLI is built on
// this package and links none of the daemon.
package cowork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// ErrNotRunning means the instance has no live hostd.
var ErrNotRunning = errors.New("not running")

// Errors of hostd's control API, for errors.Is. A call's error otherwise
// reads as hostd's own words, which say what to do.
var (
	// ErrUnavailable: hostd cannot do it now (the guest network is not up
	// yet, the API endpoint cannot be reached), or it is exiting or gone.
	ErrUnavailable = controlwire.ErrUnavailable
	// ErrInvalidArgument: hostd refused the request itself (a policy or a
	// credential it cannot use); asking again fails again.
	ErrInvalidArgument = controlwire.ErrInvalidArgument
	// ErrSessionExpired: a relay session reached its ceiling.
	ErrSessionExpired = controlwire.ErrExpired
	// ErrFailedPrecondition: the instance is not in a state for the call
	// (not ready, its share in use for a suspend); the message says what
	// to change first.
	ErrFailedPrecondition = controlwire.ErrFailedPrecondition
)

// What hostd reports, in plain Go types. They are aliases of package
// controlwire's, the control API's wire types: a program gets them here
// without importing the wire package, one type with no copy between the
// two, and each field is documented once, where it is on the wire.
type (
	// Status describes the instance and its VM.
	Status = controlwire.Status
	// NetworkStats is the guest network's traffic and flow limits.
	NetworkStats = controlwire.NetworkStats
	// ProcessStats is hostd's own use of resources.
	ProcessStats = controlwire.ProcessStats
	// BootPhases is where the guest's boot spent its time.
	BootPhases = controlwire.BootPhases
	// ServeFailure is a service of the guest's network that stopped.
	ServeFailure = controlwire.ServeFailure
	// Event is a step of the boot, as Start and Instance.Events report it.
	Event = controlwire.Event
	// Phase is how far a boot got.
	Phase = controlwire.Phase
)

// StateStandby is Status.State of a warm pool clone whose hostd holds its
// saved guest loaded and paused: Start runs it.
const StateStandby = controlwire.StateStandby

// The phases of a boot, in order up to PhaseReady.
const (
	PhaseUnspecified    = controlwire.PhaseUnspecified
	PhaseVMStarted      = controlwire.PhaseVMStarted
	PhaseKernel         = controlwire.PhaseKernel
	PhaseAgentConnected = controlwire.PhaseAgentConnected
	PhaseProvisioning   = controlwire.PhaseProvisioning
	PhaseReady          = controlwire.PhaseReady
	PhaseFailed         = controlwire.PhaseFailed
	PhaseStopped        = controlwire.PhaseStopped
)

// Client is a connection to one instance's hostd.
type Client struct {
	Name  string
	Paths instance.Paths
	api   *controlwire.Client
}

// Dial connects to the named instance's hostd; ErrNotRunning if it has none.
func Dial(name string) (*Client, error) {
	paths, err := instance.PathsFor(name)
	if err != nil {
		return nil, err
	}
	if !instance.Held(paths) {
		return nil, fmt.Errorf("instance %s is %w", name, ErrNotRunning)
	}
	return newClient(name, paths), nil
}

func newClient(name string, paths instance.Paths) *Client {
	return &Client{Name: name, Paths: paths, api: controlwire.NewClient(paths.HostdSock())}
}

// Close ends the calls still open: the event streams and the sessions.
func (c *Client) Close() error { return c.api.Close() }

// Status asks hostd about the instance.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	return c.api.Status(ctx)
}

// Wake runs the guest a standby hostd holds loaded and paused (a warm
// pool clone's); Start does it.
func (c *Client) Wake(ctx context.Context) error {
	return c.api.Wake(ctx)
}

// Stop shuts the VM down (cuts its power with force) and returns once it
// stopped; hostd then exits.
func (c *Client) Stop(ctx context.Context, force bool, timeout time.Duration) error {
	return c.api.Stop(ctx, controlwire.StopRequest{Force: force, TimeoutMS: timeout.Milliseconds()})
}

// EventStream is the boot's events; Recv returns io.EOF after the last.
type EventStream interface {
	Recv() (*Event, error)
	Close() error
}

// Events follows the boot: what happened so far, then what happens,
// until the boot ends, ctx ends or the stream is closed.
func (c *Client) Events(ctx context.Context) (EventStream, error) {
	return c.api.Events(ctx)
}

// SetPolicy replaces the running guest's network policy (hostd saves it).
func (c *Client) SetPolicy(ctx context.Context, p policy.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return c.api.SetPolicy(ctx, b)
}

// ReloadSecrets has hostd take the instance's secrets as its config now
// says (Instance.SetSecret and RemoveSecrets call it).
func (c *Client) ReloadSecrets(ctx context.Context) (*SecretsReloaded, error) {
	return c.api.ReloadSecrets(ctx)
}

// SecretsReloaded is what a reload of the secrets did.
type SecretsReloaded = controlwire.SecretsReloaded

// ToolCall is one of Claude Code's tool calls in an ask: its id and tool,
// from its tool_use's start in claude's stream to its tool_result.
type ToolCall = controlwire.ToolCall

// RecordToolCalls writes the tool calls of the ask that ran under the
// relay session id into the instance's audit log (records of kind
// "tool", marked as the guest's claim), where `cowork proxy --ask ID`
// shows them beside the ask's flows. `cowork ask` hands in those of its
// run; at most 4,096 a call, each id at most 64 printable bytes, each
// name 64 and the mark of a cut.
func (c *Client) RecordToolCalls(ctx context.Context, id string, calls []ToolCall) error {
	return c.api.ToolCalls(ctx, controlwire.ToolCallsRequest{Session: id, Calls: calls})
}

// Session is a credential handed to hostd's relay: the guest process gets
// Placeholder and BaseURL instead of the real key and endpoint. It lives
// as long as its connection to hostd: until Close, until the Client
// closes, or until this process exits, however it exits (hostd sees the
// socket close), and at most until Expires.
type Session struct {
	ID, Placeholder, BaseURL string
	Expires                  time.Time

	c     *Client
	usage *Usage // what hostd said it spent, once closed
	heldCall
}

// Budget is what a session may spend through the relay: the tokens its
// answers count (input, output, cache writes and reads), US dollars at
// cowork's price table (built in, with $COWORK_HOME/prices.json laid
// over it), or both. Zero is no limit. Once a limit is reached the relay
// answers the session's next requests with an API error that Claude Code
// shows; see the README's "Spend budgets" for the rule.
type Budget struct {
	MaxTokensTotal int64
	MaxCostUSD     float64
}

// Check says what is wrong with a budget.
func (b Budget) Check() error {
	return budget.Limit{Tokens: b.MaxTokensTotal, CostUSD: b.MaxCostUSD}.Check("Budget.MaxTokensTotal", "Budget.MaxCostUSD")
}

// Usage is what a session spent through the relay.
type Usage = controlwire.SessionUsage

// SessionOptions are a session's settings besides its credential.
type SessionOptions struct {
	// TTL is the session's ceiling (0 or more than MaxSessionTTL:
	// MaxSessionTTL).
	TTL time.Duration
	// What names the session in `cowork usage`: "ask", "claude", or a
	// word of the program's own.
	What   string
	Budget Budget
}

// MaxSessionTTL is the longest a session lives, whatever ttl asks.
const MaxSessionTTL = 8 * time.Hour

// OpenSession hands hostd a credential (an API key or an auth token) for
// endpoint ("" for Anthropic's API). ttl is the session's ceiling (0 or
// more than MaxSessionTTL: MaxSessionTTL); ctx bounds the opening only.
// Close the session when the guest process that uses it ends:
//
//	sess, err := c.OpenSession(ctx, "", key, "", 0)
//	if err != nil { ... }
//	defer sess.Close()
func (c *Client) OpenSession(ctx context.Context, endpoint, apiKey, authToken string, ttl time.Duration) (*Session, error) {
	return c.OpenSessionWith(ctx, endpoint, apiKey, authToken, SessionOptions{TTL: ttl})
}

// OpenSessionWith is OpenSession with a budget and a name for the
// session's spend:
//
//	sess, err := c.OpenSessionWith(ctx, "", key, "", cowork.SessionOptions{What: "review", Budget: cowork.Budget{MaxCostUSD: 2}})
//	...
//	sess.Close()
//	fmt.Println(sess.Usage().Tokens())
func (c *Client) OpenSessionWith(ctx context.Context, endpoint, apiKey, authToken string, o SessionOptions) (*Session, error) {
	if err := o.Budget.Check(); err != nil {
		return nil, err
	}
	s := &Session{c: c}
	r, err := hold(ctx, &s.heldCall, func(life context.Context) (*controlwire.Stream[controlwire.Session], error) {
		return c.api.OpenSession(life, controlwire.OpenSessionRequest{Endpoint: endpoint, APIKey: apiKey, AuthToken: authToken,
			TTLSeconds: ttlSeconds(o.TTL, MaxSessionTTL), What: o.What, MaxTokensTotal: o.Budget.MaxTokensTotal, MaxCostUSD: o.Budget.MaxCostUSD})
	})
	if err != nil {
		return nil, err
	}
	s.ID, s.Placeholder, s.BaseURL, s.Expires = r.ID, r.Placeholder, r.BaseURL, r.Expires
	return s, nil
}

// Close ends the session: its placeholder has stopped working when Close
// returns. Closing it twice does nothing.
func (s *Session) Close() error {
	var err error
	s.end(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.usage, err = s.c.api.CloseSession(ctx, s.ID)
	}, nil)
	return err
}

// Usage is what the session spent through the relay, as hostd said when
// Close ended it; nil before Close, or from a hostd that does not say.
func (s *Session) Usage() *Usage { return s.usage }

// CloseSession ends a session by its id.
func (c *Client) CloseSession(ctx context.Context, id string) error {
	_, err := c.api.CloseSession(ctx, id)
	return err
}

// Agent returns a client of the guest agent through hostd's relay.
func (c *Client) Agent() (*agentclient.Client, error) {
	return agentclient.New(agentclient.UnixDialer(c.Paths.AgentSock()))
}

// Exec runs one process in the guest over a fresh agent channel and waits
// for it: the shortcut for programs that run a command now and then. A
// program that runs many keeps one Agent client instead.
func (c *Client) Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error) {
	agent, err := c.Agent()
	if err != nil {
		return agentclient.ExitStatus{}, err
	}
	defer agent.Close()
	return agent.Exec(ctx, o)
}

// Launch starts `exe run --name NAME [ARGS]` (exe is cowork-hostd) detached from this process (its own
// session, stdio to hostd.log), so it outlives the command that started it.
func Launch(exe, name string, args ...string) (*exec.Cmd, error) {
	paths, err := instance.PathsFor(name)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(paths.HostdLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	if st, err := logf.Stat(); err == nil && st.Size() > 10<<20 {
		_ = logf.Truncate(0)
	}
	cmd := exec.Command(exe, append([]string{"run", "--name", name}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start hostd: %w", err)
	}
	return cmd, nil
}

// waitForControl waits until hostd serves its control socket; exited,
// when not nil, is closed if the hostd being waited for exits first.
func waitForControl(ctx context.Context, paths instance.Paths, exited *child) error {
	var gone <-chan struct{}
	if exited != nil {
		gone = exited.done
	}
	for {
		if c, err := net.Dial("unix", paths.HostdSock()); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-gone:
			return &hostdExit{err: exited.err}
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type hostdExit struct{ err error }

func (e *hostdExit) Error() string { return fmt.Sprintf("hostd exited (%v)", e.err) }
func (e *hostdExit) Unwrap() error { return e.err }

// Diagnostics is the end of the instance's logs, to show with a failure.
// The console is the guest's own text: it comes back inert (termsafe), so
// the error that carries it can be printed.
func Diagnostics(paths instance.Paths) string {
	var b strings.Builder
	for _, f := range []struct{ name, path string }{{"serial.log", paths.SerialLog()}, {"hostd.log", paths.HostdLog()}} {
		if t := tailLines(f.path, 10); t != "" {
			fmt.Fprintf(&b, "\n--- last lines of %s (%s) ---\n%s", f.name, f.path, termsafe.Text(t))
		}
	}
	return b.String()
}

// tailBytes bounds how much of a log tailLines reads: its end only.
const tailBytes = 64 << 10

// tailLines is the last n lines of the file at path, from its last
// tailBytes at most, made safe to print.
func tailLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > tailBytes {
		if _, err := f.Seek(st.Size()-tailBytes, io.SeekStart); err != nil {
			return ""
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, tailBytes))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
