package netstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// serveProxy runs the auditing HTTP(S) proxy on the gateway's ProxyPort:
// plain HTTP requests are forwarded, CONNECT requests tunnelled, both under
// the same policy as direct connections, and logged.
func (n *Stack) serveProxy() error {
	ln, err := gonet.ListenTCP(n.s, tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(gatewayAddr.As4()), Port: ProxyPort}, ipv4.ProtocolNumber)
	if err != nil {
		return err
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// The request was decided and its address chosen before it got here.
			return n.dialFlow(ctx, ctx.Value(targetKey{}).(netip.AddrPort))
		},
		MaxIdleConns:          64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	srv := &http.Server{
		Handler:           &proxyHandler{n: n, transport: transport},
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() { _ = srv.Serve(n.guard(ln)) }()
	return nil
}

type targetKey struct{}

type proxyHandler struct {
	n         *Stack
	transport http.RoundTripper
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		h.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		http.Error(w, "this is cowork's proxy: send proxy requests (absolute URLs, or CONNECT for HTTPS)", http.StatusBadRequest)
		return
	}
	h.forward(w, r)
}

// decide resolves host:port on the host side and returns the first of its
// addresses the policy allows, so that neither an IP literal nor a name
// that resolves somewhere private gets through the proxy either.
func (n *Stack) decide(ctx context.Context, hostport string) (netip.AddrPort, policy.Verdict, string) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		host, portStr = hostport, "80"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, policy.Verdict{Rule: "bad port " + portStr}, host
	}
	rules := n.currentRules()
	if strings.EqualFold(strings.TrimSuffix(host, "."), "host."+strings.TrimSuffix(localZone, ".")) {
		host = HostIP
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		dst := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		return dst, rules.CheckFlow(dst, n.bindings.Names(ip)), host
	}
	if v := rules.CheckName(host); !v.Allow {
		return netip.AddrPort{}, v, host
	}
	ips, err := n.cfg.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, policy.Verdict{Rule: "resolve " + host + ": no address"}, host
	}
	var first policy.Verdict
	for i, ip := range ips {
		n.bindings.Add(ip, 0, host)
		dst := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		v := rules.CheckFlow(dst, []string{host})
		if v.Allow {
			return dst, v, host
		}
		if i == 0 {
			first = v
		}
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), first, host
}

// blocked answers a denied request with a page that says what to do.
func blocked(w http.ResponseWriter, host string, v policy.Verdict) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, "cowork: %s is blocked by this sandbox's network policy (%s).\n"+
		"To allow it, on the host: cowork policy allow %s\n", host, v.Rule, host)
}

func (h *proxyHandler) connect(w http.ResponseWriter, r *http.Request) {
	n := h.n
	rec := &audit.Record{Kind: audit.KindConnect, Start: time.Now(), NameFrom: audit.FromProxy, Method: r.Method}
	dst, v, host := n.decide(r.Context(), r.Host)
	rec.Name, rec.Rule = host, v.Rule
	if dst.IsValid() {
		rec.Dst = hostPort(dst)
	}
	if !v.Allow {
		blocked(w, host, v)
		n.deny(rec)
		return
	}
	world, err := n.dialFlow(r.Context(), dst)
	if err != nil {
		http.Error(w, "cowork proxy: "+err.Error(), http.StatusBadGateway)
		n.finish(rec, audit.Allow, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		world.Close()
		http.Error(w, "cowork proxy: cannot tunnel", http.StatusInternalServerError)
		return
	}
	guest, buf, err := hj.Hijack()
	if err != nil {
		world.Close()
		return
	}
	if _, err := guest.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		guest.Close()
		world.Close()
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
	rec := &audit.Record{Kind: audit.KindHTTP, Start: time.Now(), NameFrom: audit.FromProxy, Method: r.Method,
		URL: r.URL.Scheme + "://" + r.URL.Host + r.URL.EscapedPath()}
	hostport := r.URL.Host
	if r.URL.Port() == "" {
		hostport = net.JoinHostPort(r.URL.Hostname(), "80")
	}
	dst, v, host := n.decide(r.Context(), hostport)
	rec.Name, rec.Rule = host, v.Rule
	if dst.IsValid() {
		rec.Dst = hostPort(dst)
	}
	if !v.Allow {
		blocked(w, host, v)
		n.deny(rec)
		return
	}
	var out, in atomic.Int64
	if r.Body != nil {
		r.Body = &countingBody{ReadCloser: r.Body, n: &out}
	}
	var dialErr error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.Host
			pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), targetKey{}, dst))
		},
		Transport:     h.transport,
		FlushInterval: -1, // stream: no buffering of what the server sends
		ModifyResponse: func(resp *http.Response) error {
			rec.Status = resp.StatusCode
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &in}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			dialErr = err
			rec.Status = http.StatusBadGateway
			http.Error(w, "cowork proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
	rec.BytesOut, rec.BytesIn = out.Load(), in.Load()
	n.finish(rec, audit.Allow, dialErr)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}
