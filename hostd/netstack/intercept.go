package netstack

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/tlsca"
)

// Interception: the guest's TLS to a host the instance holds secrets for
// ends here, on a certificate for that host signed by the instance's own
// CA (which the guest trusts, and whose key only hostd has). Each request
// is read, its placeholders swapped (secrets.go), and sent on over TLS to
// the host, verified against the host's roots (and the secret's own CA),
// never to an address the guest chose: a connection's upstream is the
// address the policy decided for the secret's host name. A request whose
// Host is not that host is refused.

// sniWait is how long a direct connection to a secret host's address may
// take to send its TLS ClientHello before it is spliced as it is.
const sniWait = 5 * time.Second

// leafCache holds the certificates minted for secret hosts.
type leafCache struct {
	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// leaf is the certificate the guest is shown for host.
func (n *Stack) leaf(host string) (*tls.Certificate, error) {
	c := &n.leaves
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if l := c.leaves[host]; l != nil && now.Before(l.Leaf.NotAfter.Add(-time.Hour)) {
		return l, nil
	}
	l, err := tlsca.Issue(n.cfg.SecretCA, host, now)
	if err != nil {
		return nil, err
	}
	if c.leaves == nil || len(c.leaves) >= 2*MaxSecrets {
		c.leaves = map[string]*tls.Certificate{} // hosts come only from the host's secrets
	}
	c.leaves[host] = l
	return l, nil
}

// interceptKey is the secret host key of a connection to name:port, or ""
// when its TLS is not to be terminated here.
func (n *Stack) interceptKey(name string, port uint16) string {
	if n.cfg.SecretCA == nil || name == "" || !n.secrets.any() {
		return "" // every flow asks: no secrets, no work
	}
	key := strings.ToLower(strings.TrimSuffix(name, ".")) + ":" + strconv.Itoa(int(port))
	if !n.secrets.has(key) {
		return ""
	}
	return key
}

// directIntercept handles a direct connection to an address the guest
// resolved from a secret host's name: the ClientHello's server name says
// whether it is for a secret host bound to that address (the address may
// serve others too). Such a connection is intercepted, its upstream
// decided again by the host's name (never the address the guest chose);
// out, already dialled, is closed. Anything else is spliced to out as it
// came.
func (n *Stack) directIntercept(in, out net.Conn, names []string, dst netip.AddrPort, rec *audit.Record) bool {
	if !slices.ContainsFunc(names, func(name string) bool { return n.interceptKey(name, dst.Port()) != "" }) {
		return false
	}
	head := readHello(in)
	guest := &prefixConn{Conn: in, r: io.MultiReader(bytes.NewReader(head), in)}
	sni := ParseSNI(head)
	key := n.interceptKey(sni, dst.Port())
	if key == "" || !slices.Contains(names, sni) {
		n.splice(guest, out, rec)
		return true
	}
	out.Close()
	n.intercept(guest, key, rec, dst)
	return true
}

// readHello reads the guest's first bytes until they hold a whole TLS
// record (a ClientHello, whose server name ParseSNI finds, or not), show
// they are no TLS, reach sniffLimit, or sniWait passes.
func readHello(c net.Conn) []byte {
	_ = c.SetReadDeadline(time.Now().Add(sniWait))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 2048)
	for len(buf) < sniffLimit && !helloRead(buf) {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		k, err := c.Read(buf[len(buf):min(cap(buf), sniffLimit)])
		buf = buf[:len(buf)+k]
		if err != nil {
			break
		}
	}
	return buf
}

// helloRead reports whether b holds all a ClientHello's name can be read
// from: a first byte that is no TLS handshake, or a whole first record.
func helloRead(b []byte) bool {
	if len(b) >= 1 && b[0] != 22 {
		return true
	}
	return len(b) >= 5 && len(b) >= 5+int(binary.BigEndian.Uint16(b[3:5]))
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// intercept serves the guest's TLS connection to key (name:port) as that
// host, and sends each request on to the host, at the address the policy
// decides for its name at each dial. rec, the connection's own line, is
// written when it ends. The guest's socket is the one from rec's guest
// port to peer: each request's line asks for its owner.
func (n *Stack) intercept(guest net.Conn, key string, rec *audit.Record, peer netip.AddrPort) {
	host, _, _ := strings.Cut(key, ":")
	rec.TLSTerminated = true
	cert, err := n.leaf(host)
	if err != nil {
		guest.Close()
		n.finish(rec, audit.Allow, err)
		return
	}
	up := &upstream{n: n, key: key, host: host}
	transport := &http.Transport{
		DialTLSContext:        up.dial,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	defer transport.CloseIdleConnections()

	counted := &countingConn{Conn: guest}
	tc := tls.Server(counted, &tls.Config{
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	watched := n.lim.idle.watch(tc, closerFunc(transport.CloseIdleConnections))
	ln := newOneConnListener(watched)
	srv := &http.Server{
		Handler: &interceptHandler{n: n, key: key, host: host, transport: &scrubbing{rt: transport}, idle: transport.CloseIdleConnections,
			guestPort: rec.GuestPort, peer: peer},
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       n.lim.lim.IdleTimeout,
		MaxHeaderBytes:    maxInterceptHeader,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	_ = srv.Serve(ln)
	rec.BytesOut, rec.BytesIn = counted.counts()
	n.finish(rec, audit.Allow, nil)
}

// maxInterceptHeader bounds an intercepted request's header.
const maxInterceptHeader = 64 << 10

// upstream dials the secret host for an intercepted connection.
type upstream struct {
	n         *Stack
	key, host string
}

// dial opens a TLS connection to the host, verified for its name, at the
// address the policy decides for the name now (a policy changed since the
// connection opened applies to its next dial).
func (u *upstream) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d := u.n.decide(ctx, u.key)
	if !d.v.Allow {
		if note, _ := ctx.Value(noteKey{}).(*exchangeNote); note != nil {
			note.denied = d.rule
		}
		return nil, fmt.Errorf("%s is not allowed: %s", u.key, d.rule)
	}
	c, err := u.n.dialFlow(ctx, d.dst)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{
		ServerName: u.host,
		RootCAs:    u.n.secrets.hostRoots(u.key),
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return &decidedConn{Conn: tc, dst: d.dst}, nil
}

// decidedConn is an upstream connection and the address it was decided
// for, which each request's audit line names.
type decidedConn struct {
	net.Conn
	dst netip.AddrPort
}

// interceptHandler sends the requests of an intercepted connection on.
type interceptHandler struct {
	n         *Stack
	key, host string
	transport http.RoundTripper
	idle      func() // closes the upstream's idle connections
	gen       uint64 // the secrets' generation the idle ones were made under
	// The guest's socket, from guestPort to peer (invalid: unknown).
	guestPort int
	peer      netip.AddrPort
}

func (h *interceptHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.n
	rec := &audit.Record{Kind: audit.KindHTTP, Start: time.Now(), Method: clip(r.Method),
		URL: "https://" + h.key + clip(r.URL.EscapedPath()), Name: h.host, NameFrom: audit.FromProxy,
		Rule: "secrets held for " + h.key, TLSTerminated: true, GuestPort: h.guestPort}
	if h.peer.IsValid() {
		n.owners.ask(rec, "tcp", h.guestPort, h.peer)
		defer n.owners.forget(rec)
	}
	if rule := n.auditDown(); rule != "" { // a tunnel open before: its requests are new traffic
		rec.Rule = rule
		n.denyThen(rec, func() { http.Error(w, "cowork: "+rule, http.StatusServiceUnavailable) })
		return
	}
	if !sameHost(r.Host, h.key) {
		rec.Rule = "the request's Host " + clip(r.Host) + " is not " + h.key + ", the host its TLS was for"
		n.denyThen(rec, func() {
			http.Error(w, "cowork: this connection is for "+h.key+"; the request names another host", http.StatusMisdirectedRequest)
		})
		return
	}
	// Secrets changed (a CA among them): no connection made before is
	// reused. Requests on one connection come one at a time.
	if g := n.secrets.generation(); g != h.gen {
		h.idle()
		h.gen = g
	}
	if r.Header.Get("Upgrade") != "" {
		rec.Rule = "an upgrade (" + clip(r.Header.Get("Upgrade")) + ") to a host that holds secrets: its stream could not be checked"
		http.Error(w, "cowork: connection upgrades (WebSocket) to "+h.key+", a host cowork holds secrets for, are not carried", http.StatusForbidden)
		n.deny(rec)
		return
	}
	values := n.secrets.values()
	note := &exchangeNote{rec: rec}
	n.answerHTTP(w, r, exchange{
		rec: rec,
		rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", h.key
			pr.Out.Host = strings.TrimSuffix(h.key, ":443") // the canonical name, whatever the guest spelled
			rec.Secrets, rec.SecretsWithheld, note.sent = n.secrets.swap(pr.Out.Header, h.key)
			pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), noteKey{}, note))
		},
		modify: func(resp *http.Response) {
			scrub(resp.Header, note.sent)
			// Trailers come after the body, past any scrub: none pass.
			resp.Trailer = nil
			resp.Body = &noTrailer{ReadCloser: resp.Body, resp: resp}
		},
		transport: h.transport,
		unanswered: func(w http.ResponseWriter, err error) (int, error) {
			if note.denied != "" {
				rec.Rule = note.denied
				http.Error(w, "cowork: "+h.key+" is blocked by this sandbox's network policy ("+note.denied+")", http.StatusForbidden)
				return http.StatusForbidden, err
			}
			http.Error(w, "cowork: "+h.key+" did not answer: "+err.Error(), http.StatusBadGateway)
			return http.StatusBadGateway, err
		},
		denied:   func() bool { return note.denied != "" },
		upstream: h.key,
		secrets:  values,
		log:      n.log,
		prefix:   "secrets",
	})
}

// exchangeNote is what an intercepted request's two sides share: the
// strings that carry a value (swap's sent, for the scrubbing), its audit
// record (which names the address its connection was decided for), or
// the rule that denied it. Its request's goroutine alone uses it.
type exchangeNote struct {
	sent   []string
	rec    *audit.Record
	denied string
}

// noteKey is the context key of a request's exchangeNote.
type noteKey struct{}

// scrubbing scrubs the headers of the informational answers (103 Early
// Hints) that ReverseProxy passes to the guest as they come, before its
// own hook copies them, and notes the address of the connection used.
type scrubbing struct{ rt http.RoundTripper }

func (s *scrubbing) RoundTrip(r *http.Request) (*http.Response, error) {
	note, _ := r.Context().Value(noteKey{}).(*exchangeNote)
	if note == nil {
		note = &exchangeNote{}
	}
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
			scrub(h, note.sent)
			return nil
		},
		GotConn: func(info httptrace.GotConnInfo) {
			if c, ok := info.Conn.(*decidedConn); ok && note.rec != nil {
				note.rec.Dst = hostPort(c.dst)
			}
		},
	}
	return s.rt.RoundTrip(r.WithContext(httptrace.WithClientTrace(r.Context(), trace)))
}

// noTrailer drops an answer's trailer once its body has been read (the
// transport fills it in then).
type noTrailer struct {
	io.ReadCloser
	resp *http.Response
}

func (b *noTrailer) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	if err != nil {
		b.resp.Trailer = nil
	}
	return k, err
}

// sameHost reports whether a request's Host names key's host and port.
func sameHost(hostHeader, key string) bool {
	want, port, _ := strings.Cut(key, ":")
	h, p := strings.ToLower(hostHeader), ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h, p = h[:i], h[i+1:]
	}
	return strings.TrimSuffix(h, ".") == want && (p == "" && port == "443" || p == port)
}

// oneConnListener serves one connection: its second Accept waits until
// that connection is closed (by the server, or by whoever hijacked it: a
// WebSocket's upgrade), so that Serve returns when it is done.
type oneConnListener struct {
	conn   net.Conn
	once   sync.Once
	closed chan struct{}
	gone   sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: c, closed: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = &notifyingConn{Conn: l.conn, l: l} })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.gone.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// notifyingConn ends its listener's wait when it is closed.
type notifyingConn struct {
	net.Conn
	l *oneConnListener
}

func (c *notifyingConn) Close() error {
	err := c.Conn.Close()
	c.l.Close()
	return err
}

// countingConn counts the bytes of a connection (before TLS).
type countingConn struct {
	net.Conn
	mu      sync.Mutex
	in, out int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in += int64(k)
	c.mu.Unlock()
	return k, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out += int64(k)
	c.mu.Unlock()
	return k, err
}

func (c *countingConn) counts() (in, out int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.in, c.out
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }
