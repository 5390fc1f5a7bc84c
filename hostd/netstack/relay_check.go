package netstack

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// EndpointCheckTimeout bounds CheckEndpoint.
const EndpointCheckTimeout = 10 * time.Second

// CheckEndpoint connects to a session's API endpoint the way the relay
// will (directly, or through the upstream proxy) and hangs up, sending
// nothing. A host with no way there is told so when the session opens,
// within seconds, with the endpoint and what to check: otherwise Claude
// Code in the guest would retry the relay's refusals in silence for
// minutes before it gave up.
func (n *Stack) CheckEndpoint(ctx context.Context, sess *Session) error {
	ctx, cancel := context.WithTimeout(ctx, EndpointCheckTimeout)
	defer cancel()
	u := sess.Endpoint
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	c, err := n.dial.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err == nil {
		c.Close()
		return nil
	}
	why := redactText(err.Error(), sess.secrets()...)
	if ctx.Err() != nil {
		why = fmt.Sprintf("no answer within %s", EndpointCheckTimeout)
	}
	via := "; check this machine's network connection, or ANTHROPIC_BASE_URL"
	if n.cfg.Upstream != "" {
		via = fmt.Sprintf(" through the upstream proxy %s; check the proxy and this machine's network, or ANTHROPIC_BASE_URL", policy.RedactURL(n.cfg.Upstream))
	}
	return fmt.Errorf("the API endpoint %s cannot be reached (%s)%s", policy.RedactURL(u.String()), why, via)
}
