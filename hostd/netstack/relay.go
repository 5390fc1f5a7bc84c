package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// serveRelay runs the credential relay on the gateway's RelayPort: it swaps
// a session's placeholder for the real credential and forwards the calls
// Claude Code makes to the real endpoint, streaming the answer as it comes.
func (n *Stack) serveRelay() error {
	n.refusals = newRefusalLog(refusalRate, refusalBurst)
	transport := n.relayTransport()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.relayRequest(w, r, transport, false) }), ReadHeaderTimeout: 30 * time.Second}
	return n.serveGateway("relay", RelayPort, srv.Serve)
}

// relayTransport is the relay's way to the API endpoints: the stack's
// dialer (directly, or through the upstream proxy).
func (n *Stack) relayTransport() *http.Transport {
	return &http.Transport{
		DialContext:           n.dial.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 10 * time.Minute,
	}
}

// ServeRelayOn serves the credential relay on l too, for clients other
// than the guest behind the gateway: on a cluster, the sandboxes' VMs
// reach the relay in cowork's egress pod over the pod network (see
// ServeProxyOn, and docs/scale-out.md). It is the gateway's relay, the
// same sessions, refusals, budgets and audit; each record names its
// client's address (Client), not a guest process, and a client holds at
// most a quarter of the flows. It returns when ctx ends or l fails,
// having closed every connection and waited (endWait at most) for their
// records to be written.
func (n *Stack) ServeRelayOn(ctx context.Context, l net.Listener) error {
	clients := n.outsideClients()
	transport := n.relayTransport()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !clients.enter() {
			writeAPIError(w, http.StatusServiceUnavailable, "overloaded_error", "cowork relay: ending")
			return
		}
		defer clients.leave()
		n.relayRequest(w, r, transport, true)
	})
	return n.serveOutside(ctx, l, "relay", clients, h)
}

// relayRequest relays one request; outside: its client is not the guest
// behind the gateway (ServeRelayOn), and its record names the client's
// address rather than a guest process.
func (n *Stack) relayRequest(w http.ResponseWriter, r *http.Request, transport http.RoundTripper, outside bool) {
	if isHello(r) {
		w.WriteHeader(http.StatusOK) // nothing leaves the host, so no audit line
		return
	}
	rec := &audit.Record{Kind: audit.KindRelay, Start: time.Now(), Method: clip(r.Method), URL: clip(r.URL.EscapedPath())}
	if outside {
		rec.Client = clip(r.RemoteAddr)
	} else {
		n.askRequester(rec, r)
	}
	defer n.owners.forget(rec) // a refusal over the rate limit goes unrecorded
	if rule := n.auditDown(); rule != "" {
		n.refuse(rec, http.StatusServiceUnavailable, rule)
		writeAPIError(w, http.StatusServiceUnavailable, "overloaded_error",
			"cowork relay: the sandbox's audit log cannot be written on the host, so nothing goes out until it can; free space on the host's disk")
		return
	}
	path, ok := relayCall(r)
	if !ok {
		// Audited before the answer, so that a guest that got its answer
		// finds the line written.
		n.refuse(rec, http.StatusNotFound, RouteRefused)
		writeAPIError(w, http.StatusNotFound, "not_found_error",
			fmt.Sprintf("cowork relay: %s %s is not an API call Claude Code makes, so the relay does not forward it", clip(r.Method), clip(r.URL.EscapedPath())))
		return
	}
	sess, id, why := n.sessions.Lookup(placeholderOf(r.Header))
	if sess == nil {
		rec.Session = id
		n.refuse(rec, http.StatusUnauthorized, string(why))
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", refusalMessage(why))
		return
	}
	rec.Session, rec.Name, rec.NameFrom, rec.Rule = sess.ID, sess.Endpoint.Hostname(), audit.FromProxy, "relay session "+sess.ID
	// The request lives no longer than its session: an answer still
	// streaming when the session ends is cut.
	guest := r.Context()
	ctx, cancel := context.WithCancelCause(guest)
	defer cancel(nil)
	defer context.AfterFunc(sess.ctx, func() { cancel(sess.Err()) })()
	r = r.WithContext(ctx)
	m, ok := n.admitCall(ctx, w, rec, sess, path, r)
	if !ok {
		return
	}
	defer m.settle(rec) // the exchange settles it; this, should it not get there
	n.answerHTTP(w, r, exchange{
		rec: rec,
		// ReverseProxy has already dropped the hop-by-hop headers, and
		// those the request's Connection header names, from pr.Out.
		rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Path, pr.Out.URL.RawPath, pr.Out.URL.User = path, "", nil
			pr.SetURL(sess.Endpoint)
			pr.Out.Host = sess.Endpoint.Host
			stripCredentials(pr.Out.Header)
			// The transport then asks for gzip itself and hands on the
			// answer decoded: the meter reads its usage, which a
			// compression the guest asked for would hide.
			pr.Out.Header.Del("Accept-Encoding")
			// A chunked body's trailer could carry one too. ReverseProxy's
			// clone of the request already leaves its values empty; this
			// keeps it so should that change.
			pr.Out.Trailer = nil
			if sess.apiKey != "" {
				pr.Out.Header.Set("x-api-key", sess.apiKey)
			} else {
				pr.Out.Header.Set("Authorization", "Bearer "+sess.authToken)
			}
		},
		transport: transport,
		modify:    m.watch,
		settle:    m.settle,
		unanswered: func(w http.ResponseWriter, err error) (int, error) {
			if sess.Err() != nil {
				writeAPIError(w, http.StatusUnauthorized, "authentication_error", refusalMessage(endedBy(sess.Err())))
				return http.StatusUnauthorized, fmt.Errorf("refused before the answer came: %w", sess.Err())
			}
			writeAPIError(w, http.StatusBadGateway, "api_error", "cowork relay: the API endpoint did not answer: "+err.Error())
			return http.StatusBadGateway, err
		},
		endedBy:  sess.Err,
		upstream: "the endpoint",
		secrets:  sess.secrets(),
		log:      n.log.With("session", sess.ID),
		prefix:   "relay",
		warnCut:  true,
	})
}

// endedBy is the refusal that matches why a session ended.
func endedBy(err error) Refusal {
	if errors.Is(err, ErrSessionExpired) {
		return Expired
	}
	return Ended
}
