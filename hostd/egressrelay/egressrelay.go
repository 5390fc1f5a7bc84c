// Package egressrelay opens the credential relay's sessions of a
// cluster's egress pod (`cowork-hostd egress --sessions-listen`): the
// relay there serves the namespace's guests on the pod network, with the
// API key of a Kubernetes Secret mounted into that pod alone. Sessions
// are opened over the control API's JSON lines (controlwire), on a
// loopback address of the pod, which only the API server's
// pods/portforward reaches (and so only a caller the cluster's RBAC lets
// in); the guests, on the pod network, cannot. A request carries no
// credential: the key never leaves the pod. See docs/scale-out.md.
package egressrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// DefaultSecret is the name of the Secret whose "api-key" the egress pod
// mounts (kubevirt.EgressSpec.APIKeySecret).
const DefaultSecret = "cowork-api-key"

// maxKey bounds the key file: a key is about a hundred bytes.
const maxKey = 4 << 10

// CheckLoopback refuses a sessions address that is not a loopback IP
// and port: anything else would let the guests, which reach the pod over
// the pod network, open sessions of their own.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want a loopback address and port, such as 127.0.0.1:7892", addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() || ip.Zone() != "" {
		return fmt.Errorf("%q is not a loopback address: the guests on the pod network would reach it; want 127.0.0.1:PORT, which only the API server's port-forward reaches", addr)
	}
	return nil
}

// Sessions serves open_session and close_session of the egress pod's
// relay; every other call is refused.
type Sessions struct {
	onlySessions
	// Stack is the egress proxy's network, whose relay the guests reach
	// (netstack.Stack.ServeRelayOn).
	Stack *netstack.Stack
	// KeyFile holds the API key (the Secret's, mounted into this pod);
	// it is read at each session, so that a Secret created or changed
	// after the pod started is taken.
	KeyFile string
	// Secret names the Secret mounted at KeyFile, for the messages that
	// say how to give the pod a key ("": DefaultSecret).
	Secret string
	// Endpoint is the API endpoint the key is sent to ("":
	// netstack.DefaultAPIEndpoint). A request naming another is refused:
	// whoever may open a session does not get to send the key elsewhere.
	Endpoint string
	// Closing, when closed, ends every session (the pod is stopping).
	Closing <-chan struct{}
	Log     *slog.Logger
}

var _ controlwire.Handler = (*Sessions)(nil)

func (s *Sessions) secret() string {
	if s.Secret == "" {
		return DefaultSecret
	}
	return s.Secret
}

func (s *Sessions) endpoint() string {
	if s.Endpoint == "" {
		return netstack.DefaultAPIEndpoint
	}
	return s.Endpoint
}

// key reads the API key, or says how to give the pod one.
func (s *Sessions) key() (string, error) {
	hint := fmt.Sprintf("the proxy's pod has no API key at %s; give the namespace one with `kubectl create secret generic %s --from-literal=api-key=...` (the pod sees it within a minute or two)", s.KeyFile, s.secret())
	if s.KeyFile == "" {
		return "", errors.New("the egress proxy was started without --api-key-file, so its relay has no API key; deploy it again with `cowork-hostd-kubevirt egress ... | kubectl apply -f -`")
	}
	// Not O_NOFOLLOW: a Secret's volume makes each key a symlink.
	f, err := os.Open(s.KeyFile)
	if errors.Is(err, os.ErrNotExist) {
		return "", errors.New(hint)
	}
	if err != nil {
		return "", fmt.Errorf("read the API key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKey+1))
	if err != nil {
		return "", fmt.Errorf("read the API key at %s: %w", s.KeyFile, err)
	}
	if len(b) > maxKey {
		return "", fmt.Errorf("the API key at %s is over %d bytes: not a key", s.KeyFile, maxKey)
	}
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", errors.New(hint)
	}
	return k, nil
}

// OpenSession opens a relay session with the pod's key, which lives as
// long as the call: it ends when the caller's connection closes (the
// daemon's port-forward stream), on close_session, when the pod stops,
// or at its ceiling.
func (s *Sessions) OpenSession(ctx context.Context, req controlwire.OpenSessionRequest, send func(*controlwire.Session) error) error {
	if req.APIKey != "" || req.AuthToken != "" {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "a session on the cluster carries no credential: the relay uses the API key of the namespace's Secret %s, and a key sent here is refused, not used", s.secret())
	}
	if req.Endpoint != "" && !sameEndpoint(req.Endpoint, s.endpoint()) {
		return controlwire.Errorf(controlwire.CodeInvalidArgument, "the cluster's relay sends its key to %s only, not to %s; unset ANTHROPIC_BASE_URL", policy.RedactURL(s.endpoint()), policy.RedactURL(req.Endpoint))
	}
	key, err := s.key()
	if err != nil {
		return controlwire.Errorf(controlwire.CodeFailedPrecondition, "%v", err)
	}
	h := Holder{Stack: s.Stack, Closing: s.Closing, Stopped: "the egress proxy is stopping", Log: s.Log}
	return h.Hold(ctx, netstack.SessionRequest{
		Endpoint: s.endpoint(), APIKey: key, What: req.What,
		TTL:    time.Duration(req.TTLSeconds) * time.Second,
		Budget: budget.Limit{Tokens: req.MaxTokensTotal, CostUSD: req.MaxCostUSD},
	}, "", send)
}

// CloseSession ends a session by its id and says what it spent.
func (s *Sessions) CloseSession(ctx context.Context, id string) (*controlwire.SessionUsage, error) {
	return Usage(s.Stack.Sessions().Close(id)), nil
}

// Usage is what a closed relay session spent, as the control API says it
// (nil for no session): hostd's CloseSession answers it too.
func Usage(sess *netstack.Session) *controlwire.SessionUsage {
	if sess == nil {
		return nil
	}
	u := sess.Usage()
	return &controlwire.SessionUsage{Requests: u.Requests, Refused: u.Refused,
		InputTokens: u.Input, OutputTokens: u.Output, CacheCreationInputTokens: u.CacheWrite, CacheReadInputTokens: u.CacheRead,
		EstimatedTokens: u.Estimated, CostUSD: u.CostUSD, Unpriced: u.Unpriced, Stopped: u.Stopped}
}

// onlySessions refuses every call but the sessions', naming them.
type onlySessions struct{}

func notHere(c controlwire.Call) error {
	return controlwire.Errorf(controlwire.CodeUnimplemented, "the egress pod's sessions port answers %s and %s only, not %s", controlwire.CallOpenSession, controlwire.CallCloseSession, c)
}

func (onlySessions) Status(context.Context) (*controlwire.Status, error) {
	return nil, notHere(controlwire.CallStatus)
}
func (onlySessions) Stop(context.Context, controlwire.StopRequest) error {
	return notHere(controlwire.CallStop)
}
func (onlySessions) Events(context.Context, func(*controlwire.Event) error) error {
	return notHere(controlwire.CallEvents)
}
func (onlySessions) SetPolicy(context.Context, json.RawMessage) error {
	return notHere(controlwire.CallSetPolicy)
}
func (onlySessions) Suspend(context.Context, controlwire.SuspendRequest) (*controlwire.Suspended, error) {
	return nil, notHere(controlwire.CallSuspend)
}
func (onlySessions) Ports(context.Context) ([]controlwire.Port, error) {
	return nil, notHere(controlwire.CallPorts)
}
func (onlySessions) Publish(context.Context, controlwire.PublishRequest) (*controlwire.Port, error) {
	return nil, notHere(controlwire.CallPublish)
}
func (onlySessions) Unpublish(context.Context, string) (*controlwire.Port, error) {
	return nil, notHere(controlwire.CallUnpublish)
}
func (onlySessions) AutoPublish(context.Context, bool) error {
	return notHere(controlwire.CallAutoPublish)
}
func (onlySessions) ReloadSecrets(context.Context) (*controlwire.SecretsReloaded, error) {
	return nil, notHere(controlwire.CallReloadSecrets)
}
func (onlySessions) Learn(context.Context, controlwire.LearnRequest, func(*controlwire.Learning) error) error {
	return notHere(controlwire.CallLearn)
}
func (onlySessions) ToolCalls(context.Context, controlwire.ToolCallsRequest) error {
	return notHere(controlwire.CallToolCalls)
}
func (onlySessions) Wake(context.Context) error { return notHere(controlwire.CallWake) }

// sameEndpoint compares two endpoint URLs as the relay would use them.
func sameEndpoint(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host) &&
		strings.TrimSuffix(ua.Path, "/") == strings.TrimSuffix(ub.Path, "/") && ua.User == nil
}

// Serve answers the sessions' calls on l, which must be a loopback
// listener, until ctx ends; the sessions end with it.
func Serve(ctx context.Context, l net.Listener, h *Sessions) error {
	if err := CheckLoopback(l.Addr().String()); err != nil {
		l.Close()
		return err
	}
	srv := controlwire.NewServer(h)
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.Serve(l)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
