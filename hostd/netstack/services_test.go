//go:build linux

package netstack

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func TestUDPFlow(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"198.51.100.21"}})
	tn.world.serveUDPEcho(t, "198.51.100.20:5000")
	tn.lookup(t, "udp.allowed.test")
	conn, err := tn.guest.DialUDP("198.51.100.20:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 100)
	for _, msg := range []string{"one", "two!"} {
		conn.Write([]byte(msg))
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo of %q: %q %v", msg, buf[:n], err)
		}
	}
	// A denied destination gets nothing through, and one line however often
	// it is tried (and, after the throttle's window, a summary of the rest).
	denied, _ := tn.guest.DialUDP("198.51.100.21:5000")
	for range 5 {
		denied.Write([]byte("let me out"))
	}
	denied.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := denied.Read(buf); err == nil {
		t.Fatalf("a denied UDP flow answered: %q", buf[:n])
	}
	denied.Close()
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindUDP && r.Dst == "198.51.100.21:5000" })
	if r.Verdict != audit.Deny {
		t.Fatalf("record %+v", r)
	}
	lines := 0
	audit.Stream(t.Context(), tn.auditLog, time.Time{}, false, func(r *audit.Record) error {
		if r.Dst == "198.51.100.21:5000" && r.Suppressed == 0 {
			lines++
		}
		return nil
	})
	if lines != 1 {
		t.Fatalf("%d lines for one denied flow tried 5 times", lines)
	}
}

// udpFrame wraps a DHCP message in the broadcast frame a booting guest sends.
func udpFrame(mac net.HardwareAddr, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac), DstAddr: header.EthernetBroadcastAddress, Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b) - header.EthernetMinimumSize), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{}), DstAddr: tcpip.AddrFrom4([4]byte{255, 255, 255, 255})})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip.Payload())
	u.Encode(&header.UDPFields{SrcPort: 68, DstPort: 67, Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload)
	return b
}

// proxyClient sends HTTP through the gateway proxy from the guest.
func (tn *testNet) proxyClient() *http.Client {
	proxyURL, _ := url.Parse(fmt.Sprintf("http://%s:%d", GatewayIP, ProxyPort))
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(proxyURL),
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return tn.dialGuest(addr)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
}

func TestProxy(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"proxied-deny.test"}})
	body := strings.Repeat("x", 123456)
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer httpSrv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	defer tlsSrv.Close()
	tn.world.mu.Lock()
	tn.world.tcp["198.51.100.30:80"] = strings.TrimPrefix(httpSrv.URL, "http://")
	tn.world.tcp["198.51.100.30:443"] = strings.TrimPrefix(tlsSrv.URL, "https://")
	tn.world.mu.Unlock()
	client := tn.proxyClient()

	resp, err := client.Get("http://proxied.test/file?secret=1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != body {
		t.Fatalf("plain HTTP through the proxy: %d, %d bytes", resp.StatusCode, len(got))
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied.test" })
	if r.Verdict != audit.Allow || r.Method != "GET" || r.URL != "http://proxied.test/file" || r.Status != 200 || r.BytesIn != int64(len(body)) || r.Dst != "198.51.100.30:80" {
		t.Fatalf("record %+v", r)
	}

	resp, err = client.Get("https://proxied.test/")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "secure" {
		t.Fatalf("CONNECT: %q", got)
	}
	client.CloseIdleConnections() // a tunnel's line is written when it closes
	r = tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Name == "proxied.test" })
	if r.Verdict != audit.Allow || r.Dst != "198.51.100.30:443" || r.BytesOut == 0 || r.BytesIn == 0 {
		t.Fatalf("record %+v", r)
	}

	// A denied request gets a page with the command that lets it through.
	for target, fix := range map[string]string{
		"http://proxied-deny.test/": "\n  cowork policy remove proxied-deny.test\n", // on the deny list
		"http://rebind.test/":       "\n  cowork policy allow 10.0.0.5\n",           // its address is private
		"http://10.1.2.3/":          "\n  cowork policy allow 10.1.2.3\n",
	} {
		resp, err = client.Get(target)
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(got), "blocked by this sandbox's network policy") || !strings.Contains(string(got), fix) {
			t.Errorf("%s: %d %q, want %q", target, resp.StatusCode, got, fix)
		}
	}
	// CONNECT to a denied name gets the 403 too, and its line.
	c, _ := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	fmt.Fprintf(c, "CONNECT proxied-deny.test:443 HTTP/1.1\r\nHost: proxied-deny.test:443\r\n\r\n")
	status, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.Contains(status, "403") {
		t.Fatalf("CONNECT to a denied name: %q", status)
	}
	r = tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Name == "proxied-deny.test" })
	if r.Verdict != audit.Deny || r.Rule != "deny proxied-deny.test" {
		t.Fatalf("record of a denied CONNECT: %+v", r)
	}
}

func TestCredentialRelay(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	var mu sync.Mutex // the race detector does not see the socket between handler and test
	var seenKey, seenAuth, seenPath string
	seen := func() (string, string, string) { mu.Lock(); defer mu.Unlock(); return seenKey, seenAuth, seenPath }
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenKey, seenAuth, seenPath = r.Header.Get("x-api-key"), r.Header.Get("Authorization"), r.URL.Path
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: ping\ndata: {}\n\n")
	}))
	defer upstream.Close()
	sess, err := tn.Sessions().Open(upstream.URL, "sk-real-secret", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return tn.dialGuest(addr)
	}}}
	relay := fmt.Sprintf("http://%s:%d/v1/messages", GatewayIP, RelayPort)
	req, _ := http.NewRequest("POST", relay, strings.NewReader(`{"model":"x"}`))
	req.Header.Set("x-api-key", sess.Placeholder)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(got), "event: ping") {
		t.Fatalf("relay: %d %q", resp.StatusCode, got)
	}
	if key, auth, path := seen(); key != "sk-real-secret" || auth != "" || path != "/v1/messages" {
		t.Fatalf("upstream saw key %q auth %q path %q", key, auth, path)
	}
	if strings.Contains(string(got), "sk-real-secret") || strings.Contains(fmt.Sprint(resp.Header), "sk-real-secret") {
		t.Fatal("the real key reached the guest")
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindRelay && r.Session == sess.ID })
	if r.Verdict != audit.Allow || r.Status != 200 || r.BytesOut != int64(len(`{"model":"x"}`)) {
		t.Fatalf("record %+v", r)
	}

	// An unknown placeholder, or a closed session, gets a 401.
	tn.Sessions().Close(sess.ID)
	for _, key := range []string{"cowork-session-unknown", sess.Placeholder, ""} {
		req, _ := http.NewRequest("POST", relay, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("placeholder %q: %d", key, resp.StatusCode)
		}
	}
	// A bearer-token session sends Authorization, not x-api-key.
	sess2, _ := tn.Sessions().Open(upstream.URL, "", "oauth-token", time.Hour)
	req, _ = http.NewRequest("POST", relay, strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+sess2.Placeholder)
	resp, _ = client.Do(req)
	resp.Body.Close()
	if key, auth, _ := seen(); auth != "Bearer oauth-token" || key != "" {
		t.Fatalf("upstream saw key %q auth %q", key, auth)
	}
}

// An answer the guest stops reading halfway (its client gave up, or the
// connection broke) is recorded as cut short: the guest's client will
// likely ask again, and the audit log says why there were two requests.
func TestRelayAnswerCutShortIsRecorded(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes; the relay gives up when the guest does
	}))
	defer upstream.Close()
	sess, err := tn.Sessions().Open(upstream.URL, "sk-real-secret", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, RelayPort))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: relay\r\nx-api-key: %s\r\nContent-Length: 2\r\n\r\n{}", sess.Placeholder)
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if strings.Contains(line, "message_start") {
			break
		}
	}
	c.Close()
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindRelay && r.Session == sess.ID })
	if r.Status != 200 || !strings.Contains(r.Error, "ended before the answer did") || r.BytesIn == 0 {
		t.Fatalf("record of a cut-short answer: %+v", r)
	}
}

func TestPingsAnsweredOnlyByTheGateway(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	for _, dst := range []string{GatewayIP, "8.8.8.8"} {
		if err := tn.ping(dst); (err == nil) != (dst == GatewayIP) {
			t.Errorf("ping %s: %v", dst, err)
		}
		r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindICMP && r.Dst == dst })
		if (r.Verdict == audit.Allow) != (dst == GatewayIP) {
			t.Errorf("ping %s: record %+v", dst, r)
		}
	}
}

// fakeUpstream is an upstream proxy speaking HTTP CONNECT or SOCKS5 that
// records the targets it was asked for and reaches them through the world.
type fakeUpstream struct {
	mu      sync.Mutex
	targets []string
}

func (u *fakeUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.targets...)
}

func (u *fakeUpstream) serve(t *testing.T, w *world, socks bool) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var target string
				br := bufio.NewReader(c)
				if socks {
					hello := make([]byte, 3) // 05 01 00
					io.ReadFull(br, hello)
					c.Write([]byte{5, 0})
					req := make([]byte, 10) // 05 01 00 01 a b c d port
					if _, err := io.ReadFull(br, req); err != nil || req[3] != 1 {
						return
					}
					target = fmt.Sprintf("%d.%d.%d.%d:%d", req[4], req[5], req[6], req[7], int(req[8])<<8|int(req[9]))
				} else {
					req, err := http.ReadRequest(br)
					if err != nil || req.Method != http.MethodConnect {
						return
					}
					target = req.Host
				}
				u.mu.Lock()
				u.targets = append(u.targets, target)
				u.mu.Unlock()
				out, err := w.dial(context.Background(), "tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				if socks {
					c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
				} else {
					io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
				}
				go io.Copy(out, br)
				io.Copy(c, out)
			}()
		}
	}()
	scheme := "http"
	if socks {
		scheme = "socks5"
	}
	return scheme + "://" + l.Addr().String()
}

func TestUpstreamProxy(t *testing.T) {
	for _, socks := range []bool{false, true} {
		up := &fakeUpstream{}
		var proxyURL string
		tn := newTestNet(t, policy.Policy{Deny: []string{"198.51.100.13"}}, func(c *Config) {
			// The world is made before the stack: serve the proxy from a
			// world of its own that reaches the same fake servers.
			proxyURL = up.serve(t, worldOf(c), socks)
			c.Upstream = proxyURL
		})
		tn.world.serveTCP(t, "198.51.100.10:80", echo)
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatalf("%s: %v", proxyURL, err)
		}
		io.WriteString(c, "via upstream")
		buf := make([]byte, 12)
		_, err = io.ReadFull(c, buf)
		c.Close()
		if err != nil || string(buf) != "via upstream" {
			t.Fatalf("%s: echo %q %v", proxyURL, buf, err)
		}
		if got := up.seen(); len(got) != 1 || got[0] != "198.51.100.10:80" {
			t.Fatalf("%s: upstream saw %v", proxyURL, got)
		}
		// The policy still applies before anything reaches the upstream proxy.
		if c, err := tn.dialTCP(t, "198.51.100.13:80"); err == nil {
			c.Close()
			t.Fatalf("%s: a denied address connected", proxyURL)
		}
		if got := up.seen(); len(got) != 1 {
			t.Fatalf("%s: a denied flow reached the upstream proxy: %v", proxyURL, got)
		}
	}
	if _, err := newDialer("ftp://x:1", nil); err == nil || !strings.Contains(err.Error(), "not http or socks5") {
		t.Fatalf("a bad scheme: %v", err)
	}
}
