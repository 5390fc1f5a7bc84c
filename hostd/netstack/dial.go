package netstack

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"golang.org/x/net/proxy"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// dialer opens the host's side of a guest connection: directly, or through
// the upstream proxy when one is set. The policy has already said yes.
type dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

const connectTimeout = 30 * time.Second

// UpstreamFromEnv is the host's proxy setting, used when no upstream proxy
// is configured: HTTPS_PROXY, then ALL_PROXY (either case).
func UpstreamFromEnv() string {
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

func newDialer(raw string, direct dialFunc) (dialer, error) {
	if raw == "" {
		return direct, nil
	}
	u, err := policy.ParseUpstream(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "http" {
		return &connectDialer{proxy: u, direct: direct}, nil
	}
	var auth *proxy.Auth
	if u.User != nil {
		pw, _ := u.User.Password()
		auth = &proxy.Auth{User: u.User.Username(), Password: pw}
	}
	d, err := proxy.SOCKS5("tcp", u.Host, auth, contextDialer{direct})
	if err != nil {
		return nil, err
	}
	return d.(dialer), nil
}

// contextDialer gives a dialFunc the shape x/net/proxy wants.
type contextDialer struct{ f dialFunc }

func (d contextDialer) Dial(network, addr string) (net.Conn, error) {
	return d.f(context.Background(), network, addr)
}

func (d contextDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.f(ctx, network, addr)
}

// connectDialer tunnels through an HTTP proxy with CONNECT.
type connectDialer struct {
	proxy  *url.URL
	direct dialFunc
}

func (d *connectDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.direct(ctx, "tcp", d.proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("upstream proxy %s: %w", d.proxy.Host, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	} else {
		c.SetDeadline(time.Now().Add(connectTimeout))
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := d.proxy.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("upstream proxy %s: %w", d.proxy.Host, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("upstream proxy %s refused %s: %s", d.proxy.Host, addr, resp.Status)
	}
	c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn returns what the proxy sent past its answer first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
