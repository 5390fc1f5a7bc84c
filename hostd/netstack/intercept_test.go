//go:build linux

package netstack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/tlsca"
)

const (
	secretValue = "ghp_real-value-9f8e7d"
	ghAddr      = "198.51.100.50"
)

// secretService is a TLS server on the fake internet for a name, with a
// certificate from a CA of its own: it records the Authorization header of
// each request and quotes it back in a header of the answer.
type secretService struct {
	caPEM []byte
	mu    sync.Mutex
	auth  []string
}

func (s *secretService) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.auth)
}

// testCA makes a certificate authority: its certificate (PEM) and itself.
func testCA(t *testing.T, name string) ([]byte, *tls.Certificate) {
	t.Helper()
	caPEM, keyPEM, err := tlsca.New(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsca.Load(caPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return caPEM, ca
}

func newSecretService(t *testing.T, w *world, addr string, names ...string) *secretService {
	t.Helper()
	caPEM, ca := testCA(t, "upstream")
	s := &secretService{caPEM: caPEM}
	certs := map[string]*tls.Certificate{}
	for _, n := range names {
		var err error
		if certs[n], err = tlsca.Issue(ca, n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := certs[h.ServerName]; c != nil {
			return c, nil
		}
		return certs[names[0]], nil
	}}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
		rw.Header().Set("X-Echo", r.Header.Get("Authorization"))
		io.WriteString(rw, "hello from "+r.Host)
	})}
	w.serveTCP(t, addr, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		srv.Serve(newOneConnListener(tc))
	})
	return s
}

// secretNet is a stack holding GH_TOKEN for gh.test, whose service
// (its certificate from its own CA, given with the secret) is on the fake
// internet, and the CA the guest trusts.
type secretNet struct {
	*testNet
	svc       *secretService
	other     *secretService // other.test's, holding no secret
	guestRoot *x509.CertPool
	logBuf    *bytes.Buffer
	logMu     *sync.Mutex
}

func newSecretNet(t *testing.T, mode string, withCA bool) *secretNet {
	t.Helper()
	caPEM, ca := testCA(t, "test")
	var logBuf bytes.Buffer
	var mu sync.Mutex
	tn := newTestNet(t, policy.Policy{}, func(c *Config) {
		c.SecretCA = ca
		c.Log = slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tn.world.setName("gh.test.", ghAddr)
	tn.world.setName("other.test.", "198.51.100.51")
	svc := newSecretService(t, tn.world, ghAddr+":443", "gh.test", "other.test")
	// other.test is served by the same kind of server, holding no secret.
	other := newSecretService(t, tn.world, "198.51.100.51:443", "other.test")
	s := Secret{Name: "GH_TOKEN", Host: "gh.test", Mode: mode, Placeholder: testPlaceholder, Value: secretValue}
	if withCA {
		s.CA = svc.caPEM
	}
	if err := tn.SetSecrets([]Secret{s}); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &secretNet{testNet: tn, svc: svc, other: other, guestRoot: pool, logBuf: &logBuf, logMu: &mu}
}

// proxiedClient is a guest client that goes through the gateway's proxy,
// trusting roots.
func (sn *secretNet) proxiedClient(roots *x509.CertPool) *http.Client {
	proxy, _ := url.Parse("http://" + GatewayIP + ":7890")
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxy),
		DialContext:     func(ctx context.Context, _, addr string) (net.Conn, error) { return sn.dialGuest(addr) },
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
}

func get(t *testing.T, c *http.Client, u string, h http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// noValueAnywhere fails if the secret's value is in the audit log or
// hostd's log.
func (sn *secretNet) noValueAnywhere(t *testing.T) {
	t.Helper()
	b, _ := os.ReadFile(sn.auditLog)
	sn.logMu.Lock()
	logged := sn.logBuf.String()
	sn.logMu.Unlock()
	if bytes.Contains(b, []byte(secretValue)) || strings.Contains(logged, secretValue) {
		t.Fatalf("the secret's value was logged:\naudit: %s\nlog: %s", b, logged)
	}
}

// Through the proxy: the placeholder becomes the value for the secret's
// host alone; the guest never sees the value, even quoted back; the audit
// names the secret.
func TestSecretSwappedForItsHostThroughTheProxy(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	c := sn.proxiedClient(sn.guestRoot)
	resp, body := get(t, c, "https://gh.test/user", http.Header{"Authorization": {"Bearer " + testPlaceholder}})
	if resp.StatusCode != 200 || body != "hello from gh.test" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got := sn.svc.seen(); len(got) != 1 || got[0] != "Bearer "+secretValue {
		t.Fatalf("the service saw %q, want the value", got)
	}
	if echo, ok := resp.Header["X-Echo"]; ok {
		t.Fatalf("the guest was shown %q quoted back, want the field gone", echo)
	}
	rec := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.TLSTerminated })
	if !slices.Equal(rec.Secrets, []string{"GH_TOKEN"}) || rec.URL != "https://gh.test:443/user" || rec.Status != 200 {
		t.Fatalf("audit: %+v", rec)
	}
	c.CloseIdleConnections() // the connection's own line is written at its end
	sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.TLSTerminated && r.BytesIn > 0 })
	sn.noValueAnywhere(t)
}

// A placeholder sent to another host, over a tunnel or plain HTTP, stays a
// placeholder, and plain HTTP to the secret's own host gets no value either;
// the audit line names what was withheld.
func TestSecretPlaceholderElsewhereStaysAPlaceholder(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	var plain []string
	var mu sync.Mutex
	sn.world.serveTCP(t, "198.51.100.10:80", func(c net.Conn) {
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		mu.Lock()
		plain = append(plain, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	sn.world.setName("gh.test.", ghAddr)
	sn.world.serveTCP(t, ghAddr+":80", func(c net.Conn) {
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		mu.Lock()
		plain = append(plain, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	otherRoots := x509.NewCertPool()
	otherRoots.AppendCertsFromPEM(sn.other.caPEM)
	auth := http.Header{"Authorization": {"Bearer " + testPlaceholder}}
	get(t, sn.proxiedClient(otherRoots), "https://other.test/", auth.Clone())
	get(t, sn.proxiedClient(nil), "http://allowed.test/", auth.Clone())
	get(t, sn.proxiedClient(nil), "http://gh.test/", auth.Clone())
	mu.Lock()
	defer mu.Unlock()
	if len(plain) != 2 || plain[0] != "Bearer "+testPlaceholder || plain[1] != "Bearer "+testPlaceholder {
		t.Fatalf("plain HTTP servers saw %q", plain)
	}
	if got := sn.other.seen(); len(got) != 1 || got[0] != "Bearer "+testPlaceholder {
		t.Fatalf("other.test's service saw %q, want the placeholder", got)
	}
	if got := sn.svc.seen(); len(got) != 0 {
		t.Fatalf("gh.test's service saw %q", got)
	}
	rec := sn.waitRecord(t, func(r *audit.Record) bool {
		return r.Kind == audit.KindHTTP && strings.HasPrefix(r.URL, "http://allowed.test")
	})
	if !slices.Equal(rec.SecretsWithheld, []string{"GH_TOKEN"}) || rec.Secrets != nil {
		t.Fatalf("audit: %+v", rec)
	}
	sn.noValueAnywhere(t)
}

// Inside a connection intercepted for gh.test, a request whose Host names
// another host is refused: the value never goes with it.
func TestSecretRefusesAnotherHostOnTheConnection(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	c := sn.proxiedClient(sn.guestRoot)
	req, _ := http.NewRequest("GET", "https://gh.test/", nil)
	req.Host = "other.test"
	req.Header.Set("Authorization", "Bearer "+testPlaceholder)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("status %d, want 421", resp.StatusCode)
	}
	if got := sn.svc.seen(); len(got) != 0 {
		t.Fatalf("the service saw %q", got)
	}
	rec := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Verdict == audit.Deny })
	if !strings.Contains(rec.Rule, "other.test") {
		t.Fatalf("audit: %+v", rec)
	}
}

// The upstream is verified for the secret's host: without the CA that
// signs its certificate, the value is not sent.
func TestSecretGoesOnlyOverVerifiedTLS(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, false)
	resp, _ := get(t, sn.proxiedClient(sn.guestRoot), "https://gh.test/", http.Header{"Authorization": {"Bearer " + testPlaceholder}})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if got := sn.svc.seen(); len(got) != 0 {
		t.Fatalf("an unverified service saw %q", got)
	}
	sn.noValueAnywhere(t)
}

// A direct connection (no proxy) to the address the guest resolved for
// gh.test is intercepted when its server name is gh.test, and spliced as
// it is when it names another host on that address.
func TestSecretDirectConnection(t *testing.T) {
	sn := newSecretNet(t, SecretBasic, true)
	if _, err := sn.lookup(t, "gh.test"); err != nil {
		t.Fatal(err)
	}
	direct := func(serverName string, roots *x509.CertPool) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true, // each connection's line is written at its end
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return sn.dialGuest(ghAddr + ":443") },
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: serverName},
		}}
	}
	auth := http.Header{"Authorization": {basicAuth("x-access-token", testPlaceholder)}}
	resp, _ := get(t, direct("gh.test", sn.guestRoot), "https://gh.test/repo.git/info/refs", auth.Clone())
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	upstream := x509.NewCertPool()
	upstream.AppendCertsFromPEM(sn.svc.caPEM)
	resp, _ = get(t, direct("other.test", upstream), "https://other.test/", auth.Clone())
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := sn.svc.seen()
	if len(got) != 2 || got[0] != basicAuth("x-access-token", secretValue) || got[1] != basicAuth("x-access-token", testPlaceholder) {
		t.Fatalf("the service saw %q", got)
	}
	rec := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.TLSTerminated })
	if rec.Name != "gh.test" || rec.BytesOut == 0 {
		t.Fatalf("audit: %+v", rec)
	}
	sn.noValueAnywhere(t)
}

// A direct connection to another address bound to the secret host's name
// (the guest chose it) still reaches the address the host's own lookup
// gives, first: the upstream is decided by name.
func TestSecretDirectUpstreamIsDecidedByName(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	sn.world.setName("gh.test.", ghAddr+" 198.51.100.52")
	evil := newSecretService(t, sn.world, "198.51.100.52:443", "gh.test")
	if _, err := sn.lookup(t, "gh.test"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return sn.dialGuest("198.51.100.52:443") },
		TLSClientConfig:   &tls.Config{RootCAs: sn.guestRoot, ServerName: "gh.test"},
	}}
	resp, _ := get(t, c, "https://gh.test/", http.Header{"Authorization": {"Bearer " + testPlaceholder}})
	if resp.StatusCode != 200 || len(evil.seen()) != 0 || len(sn.svc.seen()) != 1 {
		t.Fatalf("status %d; the address the guest chose saw %q, the name's %q", resp.StatusCode, evil.seen(), sn.svc.seen())
	}
}

// Two secret hosts on one address: each server name gets its own host's
// interception.
func TestSecretTwoHostsOnOneAddress(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	const both = "198.51.100.54"
	svc := newSecretService(t, sn.world, both+":443", "gh.test", "two.test")
	sn.world.setName("gh.test.", both)
	sn.world.setName("two.test.", both)
	if err := sn.SetSecrets([]Secret{
		{Name: "GH_TOKEN", Host: "gh.test", Mode: SecretAuthorization, Placeholder: testPlaceholder, Value: secretValue, CA: svc.caPEM},
		{Name: "TWO", Host: "two.test", Mode: SecretAuthorization, Placeholder: PlaceholderPrefix + "2222222222222222", Value: "two-value-long", CA: svc.caPEM},
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gh.test", "two.test"} {
		if _, err := sn.lookup(t, name); err != nil {
			t.Fatal(err)
		}
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return sn.dialGuest(both + ":443") },
		TLSClientConfig:   &tls.Config{RootCAs: sn.guestRoot, ServerName: "two.test"},
	}}
	resp, _ := get(t, c, "https://two.test/", http.Header{"Authorization": {"Bearer " + PlaceholderPrefix + "2222222222222222"}})
	if got := svc.seen(); resp.StatusCode != 200 || len(got) != 1 || got[0] != "Bearer two-value-long" {
		t.Fatalf("status %d, the service saw %q", resp.StatusCode, got)
	}
}

// A direct connection to the secret host's address that is no TLS (a
// server that speaks first, say) is spliced at once, not after sniWait.
func TestSecretDirectNonTLSIsNotHeld(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	sn.world.setName("gh.test.", ghAddr)
	sn.world.serveTCP(t, ghAddr+":22", func(c net.Conn) { io.WriteString(c, "SSH-2.0-test\r\n"); io.Copy(io.Discard, c) })
	if err := sn.SetSecrets([]Secret{{Name: "GH_TOKEN", Host: "gh.test:22", Mode: SecretAuthorization, Placeholder: testPlaceholder, Value: secretValue}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.lookup(t, "gh.test"); err != nil {
		t.Fatal(err)
	}
	c, err := sn.dialGuest(ghAddr + ":22")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "SSH-2.0-client\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "SSH-2.0-test\r\n" || time.Since(start) > sniWait/2 {
		t.Fatalf("%q %v after %s", line, err, time.Since(start))
	}
}

// Informational answers and trailers pass no value to the guest.
func TestSecretNotInEarlyHintsOrTrailers(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	// Replace gh.test's service with one that quotes the credential in a
	// 103 and in a trailer.
	caPEM, ca := testCA(t, "upstream2")
	cert, err := tlsca.Issue(ca, "gh.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</x>; rel=preload; auth="+r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Trailer", "X-Auth")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.Header().Set("X-Auth", r.Header.Get("Authorization"))
	})}
	sn.world.serveTCP(t, "198.51.100.53:443", func(c net.Conn) {
		srv.Serve(newOneConnListener(tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})))
	})
	sn.world.setName("gh.test.", "198.51.100.53")
	if err := sn.SetSecrets([]Secret{{Name: "GH_TOKEN", Host: "gh.test", Mode: SecretAuthorization, Placeholder: testPlaceholder, Value: secretValue, CA: caPEM}}); err != nil {
		t.Fatal(err)
	}
	var early []string
	req, _ := http.NewRequest("GET", "https://gh.test/", nil)
	req.Header.Set("Authorization", "Bearer "+testPlaceholder)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		for k, v := range h {
			early = append(early, k+": "+strings.Join(v, ","))
		}
		return nil
	}}))
	resp, err := sn.proxiedClient(sn.guestRoot).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || strings.Contains(strings.Join(early, "\n"), secretValue) || strings.Contains(fmt.Sprint(resp.Trailer), secretValue) {
		t.Fatalf("body %q, 1xx %q, trailer %v", b, early, resp.Trailer)
	}
}

// Each intercepted request's audit line names the address its connection
// was decided for; one the policy now denies is a denial, and upgrades
// are refused.
func TestSecretRequestsAuditedWithTheirAddress(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	c := sn.proxiedClient(sn.guestRoot)
	get(t, c, "https://gh.test/a", http.Header{"Authorization": {"Bearer " + testPlaceholder}})
	rec := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && strings.HasSuffix(r.URL, "/a") })
	if rec.Dst != ghAddr+":443" || rec.Verdict != audit.Allow {
		t.Fatalf("audit: %+v", rec)
	}
	up, _ := get(t, c, "https://gh.test/ws", http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}})
	if up.StatusCode != http.StatusForbidden || len(sn.svc.seen()) != 1 {
		t.Fatalf("an upgrade: %d, the service saw %q", up.StatusCode, sn.svc.seen())
	}
	// The policy now denies gh.test: the same guest connection's next
	// request is refused at its upstream's dial, and audited so.
	if err := sn.SetPolicy(policy.Policy{Deny: []string{"gh.test"}}); err != nil {
		t.Fatal(err)
	}
	sn.secrets.mu.RLock()
	held := slices.Clone(sn.secrets.all)
	sn.secrets.mu.RUnlock()
	if err := sn.SetSecrets(held); err != nil { // a new generation: no idle upstream reused
		t.Fatal(err)
	}
	resp, _ := get(t, c, "https://gh.test/b", http.Header{"Authorization": {"Bearer " + testPlaceholder}})
	if resp.StatusCode != http.StatusForbidden || len(sn.svc.seen()) != 1 {
		t.Fatalf("after the denial: %d, the service saw %q", resp.StatusCode, sn.svc.seen())
	}
	rec = sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && strings.HasSuffix(r.URL, "/b") })
	if rec.Verdict != audit.Deny || !strings.Contains(rec.Rule, "gh.test") {
		t.Fatalf("audit of the denied request: %+v", rec)
	}
	sn.noValueAnywhere(t)
}
