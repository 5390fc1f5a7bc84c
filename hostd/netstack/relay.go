package netstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// DefaultAPIEndpoint is where the relay sends API calls when the session
// names no endpoint.
const DefaultAPIEndpoint = "https://api.anthropic.com"

// placeholderPrefix marks a relay placeholder, so it is recognizable in
// the guest and in a log.
const placeholderPrefix = "cowork-session-"

// Session binds a placeholder the guest gets to the real endpoint and
// credential, which stay on the host.
type Session struct {
	ID          string
	Placeholder string
	Endpoint    *url.URL
	// One of these two: an API key (x-api-key) or an OAuth/bearer token.
	apiKey, authToken string
	Expires           time.Time
}

// Sessions is the relay's table; hostd opens a session per `ask` or
// `claude` and closes it when the command ends.
type Sessions struct {
	mu sync.Mutex
	m  map[string]*Session // by placeholder
}

func newSessions() *Sessions { return &Sessions{m: map[string]*Session{}} }

// Open registers a credential and returns the session whose placeholder
// the guest process gets. endpoint "" means DefaultAPIEndpoint.
func (s *Sessions) Open(endpoint, apiKey, authToken string, ttl time.Duration) (*Session, error) {
	if (apiKey == "") == (authToken == "") {
		return nil, errors.New("a session needs exactly one of an API key and an auth token")
	}
	if endpoint == "" {
		endpoint = DefaultAPIEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("API endpoint %q: want an http(s) URL", endpoint)
	}
	id := randomHex(8)
	sess := &Session{ID: id, Placeholder: placeholderPrefix + randomHex(24), Endpoint: u, apiKey: apiKey, authToken: authToken, Expires: time.Now().Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[sess.Placeholder] = sess
	return sess, nil
}

// Close ends a session; its placeholder stops working at once.
func (s *Sessions) Close(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, sess := range s.m {
		if sess.ID == id {
			delete(s.m, p)
		}
	}
}

func (s *Sessions) lookup(placeholder string) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[placeholder]
	if sess == nil {
		return nil
	}
	if time.Now().After(sess.Expires) {
		delete(s.m, placeholder)
		return nil
	}
	return sess
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// placeholderOf reads the credential the guest sent: x-api-key, or a
// bearer token.
func placeholderOf(r *http.Request) string {
	if k := r.Header.Get("x-api-key"); k != "" {
		return k
	}
	if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(a)
	}
	return ""
}

// serveRelay runs the credential relay on the gateway's RelayPort: it swaps
// a session's placeholder for the real credential and forwards to the real
// endpoint, streaming the answer as it comes.
func (n *Stack) serveRelay() error {
	ln, err := gonet.ListenTCP(n.s, tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(gatewayAddr.As4()), Port: RelayPort}, ipv4.ProtocolNumber)
	if err != nil {
		return err
	}
	transport := &http.Transport{
		DialContext:           n.dial.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 10 * time.Minute,
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.relayRequest(w, r, transport) }), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(n.guard(ln)) }()
	return nil
}

func (n *Stack) relayRequest(w http.ResponseWriter, r *http.Request, transport http.RoundTripper) {
	rec := &audit.Record{Kind: audit.KindRelay, Start: time.Now(), Method: r.Method, URL: r.URL.EscapedPath()}
	sess := n.sessions.lookup(placeholderOf(r))
	if sess == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, `{"type":"error","error":{"type":"authentication_error","message":"cowork relay: unknown or expired session credential; run the command again through cowork"}}`)
		rec.Status, rec.Rule = http.StatusUnauthorized, "relay: unknown session"
		n.finish(rec, audit.Deny, nil)
		return
	}
	rec.Session, rec.Name, rec.NameFrom, rec.Rule = sess.ID, sess.Endpoint.Hostname(), audit.FromProxy, "relay session "+sess.ID
	var out, in atomic.Int64
	if r.Body != nil {
		r.Body = &countingBody{ReadCloser: r.Body, n: &out}
	}
	var relayErr error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(sess.Endpoint)
			pr.Out.Host = sess.Endpoint.Host
			pr.Out.Header.Del("x-api-key")
			pr.Out.Header.Del("Authorization")
			if sess.apiKey != "" {
				pr.Out.Header.Set("x-api-key", sess.apiKey)
			} else {
				pr.Out.Header.Set("Authorization", "Bearer "+sess.authToken)
			}
		},
		Transport:     transport,
		FlushInterval: -1, // server-sent events pass as they come
		ModifyResponse: func(resp *http.Response) error {
			rec.Status = resp.StatusCode
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &in}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			relayErr = err
			rec.Status = http.StatusBadGateway
			http.Error(w, "cowork relay: "+err.Error(), http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(n.log.With("session", sess.ID).Handler(), slog.LevelWarn),
	}
	// ReverseProxy panics (http.ErrAbortHandler, so that the server drops
	// the connection) when the answer breaks off mid-copy; the record is
	// written on the way out all the same.
	cut := true
	defer func() {
		rec.BytesOut, rec.BytesIn = out.Load(), in.Load()
		if cut && relayErr == nil {
			relayErr = errors.New("the answer from the endpoint broke off")
			if r.Context().Err() != nil {
				// The guest's client gave up, or its connection broke; it
				// will likely ask again.
				relayErr = fmt.Errorf("the guest's connection ended before the answer did: %w", context.Cause(r.Context()))
			}
			n.log.Warn("relay answer cut short", "session", sess.ID, "status", rec.Status, "bytes_in", rec.BytesIn,
				"after", time.Since(rec.Start).Round(time.Millisecond), "err", relayErr)
		}
		n.finish(rec, audit.Allow, relayErr)
	}()
	rp.ServeHTTP(w, r)
	cut = false
}

// publish listens on the host for each published guest port and carries
// its connections into the guest.
func (n *Stack) publish() error {
	for _, f := range n.cfg.Forwards {
		l, err := net.Listen("tcp", f.HostAddr)
		if err != nil {
			return fmt.Errorf("publish %s: %w", f.HostAddr, err)
		}
		guest := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(netip4(GuestIP)), Port: uint16(f.GuestPort)}
		go n.servePublished(l, func(c net.Conn) {
			ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
			g, err := gonet.DialContextTCP(ctx, n.s, guest, ipv4.ProtocolNumber)
			cancel()
			if err != nil {
				c.Close()
				return
			}
			n.spliceQuiet(c, g)
		})
		n.listeners = append(n.listeners, l)
	}
	return nil
}

// spliceQuiet joins two connections without an audit line: traffic the
// host started into a published port is not the guest's egress.
func (n *Stack) spliceQuiet(a, b net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(a, b); closeWrite(a); done <- struct{}{} }()
	go func() { _, _ = io.Copy(b, a); closeWrite(b); done <- struct{}{} }()
	<-done
	<-done
	a.Close()
	b.Close()
}
