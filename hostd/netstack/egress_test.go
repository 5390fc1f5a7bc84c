//go:build linux

package netstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// outsideProxy serves tn's proxy on a loopback listener, as the egress
// proxy of a cluster serves its sandboxes, and returns a client of it
// (from 127.0.0.1) and the proxy's address.
func outsideProxy(t *testing.T, tn *testNet) (*http.Client, string) {
	t.Helper()
	addr, end := serveOutside(t, tn)
	t.Cleanup(func() { end() })
	return clientFrom(addr, "127.0.0.1"), addr
}

// serveOutside serves tn's proxy to outside clients on a loopback
// listener; end ends it and returns what ServeProxyOn did.
func serveOutside(t *testing.T, tn *testNet) (addr string, end func() error) {
	t.Helper()
	return serveOutsideWith(t, tn, nil)
}

// serveOutsideWith is serveOutside with files answering plain GETs.
func serveOutsideWith(t *testing.T, tn *testNet, files http.Handler) (addr string, end func() error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tn.ServeProxyOn(ctx, l, files) }()
	return l.Addr().String(), func() error {
		cancel()
		select {
		case err := <-served:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("ServeProxyOn did not end")
		}
	}
}

// clientFrom is a client of the proxy at addr whose connections come from
// the loopback address ip (a client of its own, to the proxy).
func clientFrom(addr, ip string) *http.Client {
	u, _ := url.Parse("http://" + addr)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u), DialContext: d.DialContext}}
}

// The proxy served to outside clients applies the stack's policy and
// audit to them: what the policy allows is fetched and recorded with the
// client's address (no guest port, no owner); the proxy's own machine
// (its loopback under any name, even a port the policy exposes to the
// guest), private and link-local addresses are refused, by URL and by
// CONNECT, each with its record.
func TestProxyServedToOutsideClients(t *testing.T) {
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "loopback secret") }))
	defer local.Close()
	_, localPort, _ := net.SplitHostPort(strings.TrimPrefix(local.URL, "http://"))
	exposed, _ := strconv.Atoi(localPort)
	tn := newTestNet(t, policy.Policy{HostPorts: []int{exposed}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	defer srv.Close()
	tn.world.mu.Lock()
	tn.world.tcp["198.51.100.30:80"] = strings.TrimPrefix(srv.URL, "http://")
	tn.world.mu.Unlock()
	client, addr := outsideProxy(t, tn)

	resp, err := client.Get("http://proxied.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hi" {
		t.Fatalf("an allowed request: %d %q", resp.StatusCode, body)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied.test" })
	if r.Verdict != audit.Allow || !strings.HasPrefix(r.Client, "127.0.0.1:") || r.GuestPort != 0 || r.Owner != nil {
		t.Errorf("the allowed request's record: verdict %s, client %q, guest port %d, owner %+v", r.Verdict, r.Client, r.GuestPort, r.Owner)
	}

	for _, target := range []string{
		"127.0.0.1:" + localPort,
		"localhost:" + localPort,
		"[::1]:" + localPort,
		"host.cowork.internal:" + localPort, // exposed to the guest, not here
		HostIP + ":" + localPort,
		"loopback.test:" + localPort,
		"10.1.2.3:80",
		"169.254.169.254:80",
	} {
		resp, err := client.Get("http://" + target + "/")
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), "loopback secret") {
			t.Errorf("GET http://%s/ through the outside proxy: %d %q", target, resp.StatusCode, body)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.Contains(line, " 403 ") {
			t.Errorf("CONNECT %s through the outside proxy: %q", target, line)
		}
	}
	r = tn.waitRecord(t, func(r *audit.Record) bool {
		return r.Kind == audit.KindConnect && r.Verdict == audit.Deny && strings.HasPrefix(r.Dst, HostIP+":")
	})
	if !strings.HasPrefix(r.Client, "127.0.0.1:") || !strings.Contains(r.Rule, "egress proxy") {
		t.Errorf("a refused CONNECT to the proxy's machine: client %q, rule %q", r.Client, r.Rule)
	}

	// The guest behind the gateway still reaches the port it was given.
	resp, err = tn.proxyClient().Get("http://host.cowork.internal:" + localPort + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the guest's exposed host port through its own proxy: %d", resp.StatusCode)
	}
}

// An allow entry for a private range opens it to the guest behind the
// gateway, never to an outside client: on a cluster a private range is
// the cluster's own pods, services and API server. Nor does Azure's
// platform endpoint answer.
func TestOutsideClientsReachPublicAddressesOnly(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Allow: []string{"10.0.0.0/8", "168.63.129.16"}})
	tn.world.serveTCP(t, "10.96.0.1:80", func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\napi")
		c.Close()
	})
	resp, err := tn.proxyClient().Get("http://10.96.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the guest's own proxy refused an allowed private address: %d", resp.StatusCode)
	}
	client, _ := outsideProxy(t, tn)
	for _, u := range []string{"http://10.96.0.1/", "http://168.63.129.16:32526/"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("an outside client's %s: %d, want 403", u, resp.StatusCode)
		}
	}
	if !policy.Public(netip.MustParseAddr("198.51.100.7")) || policy.Public(netip.MustParseAddr("168.63.129.16")) || policy.Public(netip.MustParseAddr("fd00::1")) {
		t.Error("policy.Public misjudges an address")
	}
}

// One outside client holds at most a quarter of the flows: the next
// connection is closed and audited, naming the client; another client
// still gets in. Denials are throttled per client, and the summaries of
// one client's do not hide another's.
func TestOutsideClientsShareTheFlows(t *testing.T) {
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{MaxFlows: 8}))
	_, addr := outsideProxy(t, tn)
	dialFrom := func(ip string) net.Conn {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	for range 2 {
		dialFrom("127.0.0.2")
	}
	if c := dialFrom("127.0.0.2"); !closed(c) {
		t.Error("a client's third connection of 8/4 was kept")
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool {
		return r.Verdict == audit.Deny && strings.Contains(r.Rule, "a client may hold 2")
	})
	if !strings.HasPrefix(r.Client, "127.0.0.2:") || r.GuestPort != 0 {
		t.Errorf("the refusal's record: client %q, guest port %d", r.Client, r.GuestPort)
	}
	other := dialFrom("127.0.0.3")
	fmt.Fprintf(other, "GET http://169.254.169.254/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(other).ReadString('\n'); !strings.Contains(line, " 403 ") {
		t.Errorf("another client was not served: %q", line)
	}
	// The same denial from two clients: a line for each.
	for _, ip := range []string{"127.0.0.4", "127.0.0.4", "127.0.0.5"} {
		resp, err := clientFrom(addr, ip).Get("http://169.254.169.254/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, ip := range []string{"127.0.0.4:", "127.0.0.5:"} {
		tn.waitRecord(t, func(r *audit.Record) bool {
			return r.Kind == audit.KindHTTP && r.Verdict == audit.Deny && strings.HasPrefix(r.Client, ip) && r.Suppressed == 0
		})
	}
}

// When the proxy ends, it closes its clients' connections and returns once
// their records are written: each open tunnel's line is in the log, that
// of a tunnel stuck on a world that neither reads nor closes too.
func TestOutsideProxyEndsWithItsRecords(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.10:80", echo)
	// A world that takes a tunnel and then neither reads nor closes: both
	// of its splice's copies wait on it, not on the client.
	stuck := make(chan struct{})
	defer close(stuck)
	tn.world.serveTCP(t, "198.51.100.11:80", func(c net.Conn) { <-stuck })
	addr, end := serveOutside(t, tn)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT 198.51.100.11:80 HTTP/1.1\r\nHost: 198.51.100.11:80\r\n\r\n")
	if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT: %q", line)
	}
	go func() { // until the proxy's buffers and the world's are full
		for b := make([]byte, 64<<10); ; {
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	const tunnels = 16
	for range tunnels {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT 198.51.100.10:80 HTTP/1.1\r\nHost: 198.51.100.10:80\r\n\r\n")
		br := bufio.NewReader(c)
		if line, _ := br.ReadString('\n'); !strings.Contains(line, " 200 ") {
			t.Fatalf("CONNECT: %q", line)
		}
		br.ReadString('\n')
		io.WriteString(c, "ping")
		if b := make([]byte, 4); func() bool { _, err := io.ReadFull(br, b); return err != nil || string(b) != "ping" }() {
			t.Fatal("the tunnel does not echo")
		}
	}
	start := time.Now()
	if err := end(); err != nil {
		t.Fatalf("ServeProxyOn ended with %v", err)
	}
	if took := time.Since(start); took > endWait/2 {
		t.Errorf("the end took %v: it waited for a stuck tunnel", took)
	}
	if n := len(tn.records(func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Dst == "198.51.100.10:80" })); n != tunnels {
		t.Errorf("%d of the %d open tunnels' records were written by the end", n, tunnels)
	}
	if n := len(tn.records(func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Dst == "198.51.100.11:80" })); n != 1 {
		t.Error("the stuck tunnel's record was not written by the end")
	}
}

// The egress proxy's own files (the guests' agent) answer a plain GET or
// HEAD of a path, and nothing else: a proxy request for the same path on
// the proxy's own address is judged as any proxy request (refused: its
// own machine), another method is refused, and without files a path is
// refused as before.
func TestOutsideFilesAnswerPlainGetsOnly(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	files := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "file %s", r.URL.Path) })
	addr, end := serveOutsideWith(t, tn, files)
	t.Cleanup(func() { end() })
	plain := &http.Client{Timeout: 10 * time.Second}
	get := func(c *http.Client, method, url string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(plain, http.MethodGet, "http://"+addr+"/cowork-agent/linux-amd64"); code != 200 || body != "file /cowork-agent/linux-amd64" {
		t.Errorf("a plain GET: %d %q", code, body)
	}
	if code, body := get(plain, http.MethodPost, "http://"+addr+"/cowork-agent/linux-amd64"); code != http.StatusBadRequest || strings.Contains(body, "file ") {
		t.Errorf("a plain POST: %d %q; want the proxy's refusal", code, body)
	}
	if code, body := get(clientFrom(addr, "127.0.0.1"), http.MethodGet, "http://"+addr+"/cowork-agent/linux-amd64"); code == 200 || strings.Contains(body, "file ") {
		t.Errorf("a proxy request for the proxy's own address: %d %q; want it refused", code, body)
	}
	addr2, end2 := serveOutside(t, tn)
	t.Cleanup(func() { end2() })
	if code, _ := get(plain, http.MethodGet, "http://"+addr2+"/cowork-agent/linux-amd64"); code != http.StatusBadRequest {
		t.Errorf("a plain GET with no files: %d; want 400", code)
	}
}
