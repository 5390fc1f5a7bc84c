package netstack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// serveProxy runs the auditing HTTP(S) proxy on the gateway's ProxyPort:
// plain HTTP requests are forwarded, CONNECT requests tunnelled, both under
// the same policy as direct connections, and logged.
func (n *Stack) serveProxy() error {
	transport := n.proxyTransport()
	srv := &http.Server{
		Handler:           &proxyHandler{n: n, transport: transport},
		ReadHeaderTimeout: 30 * time.Second,
	}
	return n.serveGateway("proxy", ProxyPort, srv.Serve)
}

// proxyTransport carries the forwarded requests: forward rewrote each
// request's URL to the address its decision checked, so the transport
// dials that address and keys its pool of idle connections by it: a
// connection is reused only for a request decided to the same address,
// never for a name that now resolves elsewhere. The address must be the
// one in the request's context, or nothing is dialled.
func (n *Stack) proxyTransport() *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			checked, _ := ctx.Value(targetKey{}).(netip.AddrPort)
			dst, err := netip.ParseAddrPort(addr)
			if err != nil || !checked.IsValid() || dst != checked {
				return nil, fmt.Errorf("refusing to dial %s: the request was decided for %s", addr, checked)
			}
			return n.dialFlow(ctx, dst)
		},
		MaxIdleConns:          64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
}

type targetKey struct{}

type proxyHandler struct {
	n         *Stack
	transport http.RoundTripper
	// outside: its clients are not the guest behind the gateway
	// (ServeProxyOn). Its records name the client's address, and no
	// guest agent is asked who sent them. clients counts its requests.
	outside bool
	clients *clientFlows
	// files serves an outside client's plain GET of a path (not a proxy
	// request): the egress proxy's agent download (ServeProxyOn).
	files http.Handler
}

// ServeProxyOn serves the auditing proxy on l too, for clients other than
// the guest behind the gateway: on a cluster, the sandboxes' VMs reach
// cowork's egress proxy over the pod network (cowork-hostd egress; see
// docs/scale-out.md). The policy, the limits on flows and the audit log
// are the stack's; each record names its client's address (Client), not
// a guest process. Only public addresses answer through it, whatever the
// policy allows: the proxy's own loopback, and the private ranges that
// are the cluster's pods, services and API server, never do. A client
// holds at most a quarter of the flows, and a connection idle between
// requests is closed after outsideIdle. It returns when ctx ends or l
// fails, having closed every connection and waited (endWait at most) for
// their records to be written. files, when not nil, answers a client's
// GET or HEAD of a path, which is no proxy request (the guests' agent
// download): nothing it serves goes past the proxy's own machine.
func (n *Stack) ServeProxyOn(ctx context.Context, l net.Listener, files http.Handler) error {
	clients := n.outsideClients()
	h := &proxyHandler{n: n, transport: n.proxyTransport(), outside: true, clients: clients, files: files}
	return n.serveOutside(ctx, l, "egress proxy", clients, h)
}

// outsideClients bounds the flows of each outside client to a quarter of
// the stack's.
func (n *Stack) outsideClients() *clientFlows {
	return newClientFlows(max(n.lim.lim.MaxFlows/4, 1))
}

// serveOutside serves h to outside clients (ServeProxyOn, ServeRelayOn)
// on l, each held to its share of clients, until ctx ends or l fails;
// then it closes every connection and waits (endWait at most) for their
// records to be written. what names the service in the log.
func (n *Stack) serveOutside(ctx context.Context, l net.Listener, what string, clients *clientFlows, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: outsideIdle}
	ended := make(chan struct{})
	finish := func() {
		if left := clients.end(); left > 0 {
			n.log.Warn(what+": requests still handled at its end; their records are lost", "requests", left)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		finish()
		close(ended)
	})
	err := srv.Serve(&guardedListener{Listener: l, n: n, clients: clients})
	if !stop() { // ctx ended: wait for its end's work
		<-ended
		return nil
	}
	finish() // the listener failed: its clients' records are written too
	return err
}

// outsideIdle is how long an outside client's connection may sit idle
// between requests.
const outsideIdle = 2 * time.Minute

// decide is the stack's decide, but that an outside client reaches
// public addresses only (see ServeProxyOn), whatever the policy allows.
func (h *proxyHandler) decide(ctx context.Context, hostport string) decision {
	d := h.n.decide(ctx, hostport)
	if h.outside && d.v.Allow && !policy.Public(d.dst.Addr()) {
		d.v = policy.Verdict{Rule: "egress proxy: only public addresses are reachable through it, never its own machine or a private range"}
		d.rule = d.v.Rule
	}
	return d
}

// requester notes who sent r in rec: the guest's process behind it
// (askRequester), or an outside client's address. It returns the
// gateway's address, the guest socket's peer (none for an outside
// client).
func (h *proxyHandler) requester(rec *audit.Record, r *http.Request) netip.AddrPort {
	if h.outside {
		rec.Client = clip(r.RemoteAddr)
		return netip.AddrPort{}
	}
	return h.n.askRequester(rec, r)
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.clients != nil {
		if !h.clients.enter() {
			http.Error(w, "cowork proxy: ending", http.StatusServiceUnavailable)
			return
		}
		defer h.clients.leave()
	}
	if r.Method == http.MethodConnect {
		h.connect(w, r)
		return
	}
	if h.files != nil && !r.URL.IsAbs() && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		h.files.ServeHTTP(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		http.Error(w, "this is cowork's proxy: send proxy requests (absolute URLs, or CONNECT for HTTPS)", http.StatusBadRequest)
		return
	}
	h.forward(w, r)
}

// decision is what the proxy decided for one request.
type decision struct {
	host  string         // the name asked for, or the address literal
	name  string         // host, when it was judged and resolved as a name
	dst   netip.AddrPort // canonical; the only address dialled, when allowed
	v     policy.Verdict
	names []string // the names dst was judged with
	rule  string   // v.Rule, and the addresses of the name that were skipped
	// broken: the request names no address (a bad port, a name that
	// does not resolve); no policy is involved.
	broken bool
}

// decide judges host:port the way a direct connection is judged. A name
// is resolved on the host and every address it resolves to is judged in
// canonical form; the request goes to the first address the policy allows
// and the others are skipped (and named in the audit line). Denying the
// whole request when any address is denied would be stricter but would
// refuse what a direct connection reaches: the guest's own client, given
// the same answers, is refused on the denied address and goes on to the
// next. Either way no denied address is ever dialled: the caller dials
// d.dst and nothing else. A name that resolves to a public address and to
// the host's loopback therefore reaches the public one or nothing.
func (n *Stack) decide(ctx context.Context, hostport string) decision {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		host, portStr = hostport, "80"
	}
	d := decision{host: host}
	if rule := n.auditDown(); rule != "" {
		d.v, d.rule = policy.Verdict{Rule: rule}, rule
		return d
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		d.v, d.broken = policy.Verdict{Rule: "bad port " + portStr}, true
		d.rule = d.v.Rule
		return d
	}
	rules := n.currentRules()
	if isHostAlias(host) {
		host = HostIP
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		d.dst = netip.AddrPortFrom(policy.Canonical(ip), uint16(port))
		d.names = n.bindings.Names(d.dst.Addr())
		d.v = rules.CheckFlow(policy.TCP, d.dst, d.names)
		d.rule = d.v.Rule
		return d
	}
	d.name = host
	byName := rules.CheckName(host)
	if d.v = byName; !d.v.Allow {
		d.rule = d.v.Rule
		return d
	}
	ips, err := n.cfg.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		d.v, d.broken = policy.Verdict{Rule: "resolve " + host + ": no address"}, true
		d.rule = d.v.Rule
		return d
	}
	d.names = []string{host}
	var skipped []string
	var chosen bool
	for i, ip := range ips {
		dst := netip.AddrPortFrom(policy.Canonical(ip), uint16(port))
		v := rules.CheckFlow(policy.TCP, dst, d.names)
		switch {
		case v.Allow && !chosen:
			d.dst, d.v, chosen = dst, v, true
			n.bindings.Add(dst.Addr(), 0, host)
		case v.Allow:
			n.bindings.Add(dst.Addr(), 0, host)
		case len(skipped) < 4:
			skipped = append(skipped, dst.Addr().String()+" ("+v.Rule+")")
		}
		if i == 0 && !chosen {
			d.dst, d.v = dst, v // the first denial speaks for the name if none is allowed
		}
	}
	if chosen && byName.Learn && !d.v.Learn {
		// Only learn mode let the name through: without it the request is
		// refused whatever its address, so the line must say learn, not
		// the allow entry that covers the address.
		d.v.Learn, d.v.Rule = true, byName.Rule+"; its address: "+d.v.Rule
	}
	d.rule = d.v.Rule
	if chosen && len(skipped) > 0 {
		d.rule += "; skipped " + strings.Join(skipped, ", ")
	}
	return d
}

// hostAlias is the host's name in the guest (host.cowork.internal).
var hostAlias = "host." + strings.TrimSuffix(localZone, ".")

func isHostAlias(name string) bool {
	return strings.EqualFold(strings.TrimSuffix(name, "."), hostAlias)
}

// blocked answers a denied request with a page that says what to do: the
// `cowork policy` commands that would let it through (see policy.Fix),
// with the instance's --name, or why none would.
func (n *Stack) blocked(w http.ResponseWriter, d decision) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	if d.broken {
		fmt.Fprintf(w, "cowork: the proxy cannot reach %s (%s).\n", d.host, d.rule)
		return
	}
	fmt.Fprintf(w, "cowork: %s is blocked by this sandbox's network policy (%s).\n", d.host, d.rule)
	steps := n.currentRules().Fix(d.name, policy.TCP, d.dst, d.names)
	switch {
	case len(steps) > 0:
		fmt.Fprintf(w, "To allow it, on the host:\n")
		for _, s := range steps {
			fmt.Fprintf(w, "  cowork policy %s %s%s\n", s.Verb, shellQuote(s.Arg), n.cfg.NameFlag)
		}
	case d.v.HostItself():
		fmt.Fprintf(w, "No policy change allows this address: it is the host itself. A service on the host's\n"+
			"loopback is reachable only on a port you expose, at host.cowork.internal:PORT:\n"+
			"  cowork policy expose %d%s\n", d.dst.Port(), n.cfg.NameFlag)
	default:
		fmt.Fprintf(w, "No change of the policy allows it.\n")
	}
}

// shellQuote quotes a command argument the shell would change (a
// wildcard domain).
func shellQuote(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._:/-", c)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

func (h *proxyHandler) connect(w http.ResponseWriter, r *http.Request) {
	n := h.n
	rec := &audit.Record{Kind: audit.KindConnect, Start: time.Now(), Method: clip(r.Method)}
	gateway := h.requester(rec, r)
	defer n.owners.forget(rec) // a tunnel that ends unrecorded
	d := h.decide(r.Context(), r.Host)
	n.named(rec, d)
	if !d.v.Allow {
		n.denyThen(rec, func() { n.blocked(w, d) })
		return
	}
	lf, ok := n.learnedRequest(w, rec)
	if !ok {
		return
	}
	defer n.releaseLearned(lf)
	// A tunnel to a host the instance holds secrets for ends here (see
	// intercept.go): its upstream is dialled per request, to d.dst. The
	// host's own name counts (a service on an exposed port), which decide
	// turns into its address.
	name := d.name
	if name == "" && isHostAlias(d.host) {
		name = hostAlias
	}
	key := n.interceptKey(name, d.dst.Port())
	var world net.Conn
	if key == "" {
		var err error
		if world, err = n.dialFlow(r.Context(), d.dst); err == nil && !lf.own(world) {
			err = errString(ruleLearnEnded)
		}
		if err != nil {
			n.owners.holdAnswer(rec)
			http.Error(w, "cowork proxy: "+err.Error(), http.StatusBadGateway)
			n.finish(rec, audit.Allow, err)
			return
		}
	}
	closeWorld := func() {
		if world != nil {
			world.Close()
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		closeWorld()
		http.Error(w, "cowork proxy: cannot tunnel", http.StatusInternalServerError)
		return
	}
	guest, buf, err := hj.Hijack()
	if err != nil {
		closeWorld()
		return
	}
	if !lf.own(guest) { // learn mode ended meanwhile: world is closed too
		n.finish(rec, audit.Allow, errString(ruleLearnEnded))
		return
	}
	if _, err := guest.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		guest.Close()
		closeWorld()
		return
	}
	if key != "" {
		pending, _ := buf.Reader.Peek(buf.Reader.Buffered())
		pc := &prefixConn{Conn: guest, r: io.MultiReader(bytes.NewReader(bytes.Clone(pending)), guest)}
		n.intercept(pc, key, rec, gateway)
		return
	}
	if buf.Reader.Buffered() > 0 { // the client did not wait for our answer
		pending, _ := buf.Reader.Peek(buf.Reader.Buffered())
		if k, err := world.Write(pending); err == nil {
			rec.BytesOut += int64(k)
		}
	}
	n.splice(guest, world, rec)
}

func (h *proxyHandler) forward(w http.ResponseWriter, r *http.Request) {
	n := h.n
	rec := &audit.Record{Kind: audit.KindHTTP, Start: time.Now(), Method: clip(r.Method),
		URL: clipTo(r.URL.Scheme+"://"+r.URL.Host+r.URL.EscapedPath(), maxURL)}
	h.requester(rec, r)
	defer n.owners.forget(rec)
	hostport := r.URL.Host
	if r.URL.Port() == "" {
		hostport = net.JoinHostPort(r.URL.Hostname(), "80")
	}
	d := h.decide(r.Context(), hostport)
	n.named(rec, d)
	if !d.v.Allow {
		n.denyThen(rec, func() { n.blocked(w, d) })
		return
	}
	lf, ok := n.learnedRequest(w, rec)
	if !ok {
		return
	}
	defer n.releaseLearned(lf)
	// Learn mode's end cancels the request (and an upgraded connection's
	// upstream with it).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	lf.own(closerFunc(cancel))
	r = r.WithContext(ctx)
	// A placeholder in plain HTTP stays one: secrets go only over TLS to
	// their host (intercept.go). The audit line names it.
	rec.SecretsWithheld = n.secrets.withheld(r.Header)
	n.answerHTTP(w, r, exchange{
		rec: rec,
		rewrite: func(pr *httputil.ProxyRequest) {
			// The server gets the name in Host; the transport gets the
			// checked address in the URL (see proxyTransport).
			u := *pr.In.URL
			u.Host = hostPort(d.dst)
			pr.Out.URL = &u
			pr.Out.Host = pr.In.Host
			pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), targetKey{}, d.dst))
		},
		transport: h.transport,
		unanswered: func(w http.ResponseWriter, err error) (int, error) {
			http.Error(w, "cowork proxy: "+err.Error(), http.StatusBadGateway)
			return http.StatusBadGateway, err
		},
		upstream: "the server",
		// A cut answer is routine here (a client stops a download): the
		// audit line says so, hostd's log does not.
		log:    n.log,
		prefix: "proxy",
	})
}

// learnedRequest holds the place of a request learn mode alone let
// through (holdLearned); when it is refused, it answers 403, writes the
// denial and reports false.
func (n *Stack) learnedRequest(w http.ResponseWriter, rec *audit.Record) (*learnedFlow, bool) {
	lf, rule := n.holdLearned(rec)
	if rule != "" {
		http.Error(w, "cowork: "+rule, http.StatusForbidden)
		rec.Rule = rule
		n.deny(rec)
		return nil, false
	}
	return lf, true
}

// named fills in what a proxy record says of its destination: the name
// the proxy resolved (or the literal it was given), the address decided,
// the rule.
func (n *Stack) named(rec *audit.Record, d decision) {
	rec.Name, rec.NameFrom, rec.Rule = clipTo(d.host, maxHost), audit.FromProxy, clipTo(d.rule, maxText)
	rec.Learn = d.v.Allow && d.v.Learn
	if d.dst.IsValid() {
		rec.Dst = hostPort(d.dst)
	}
}
