//go:build linux

package netstack

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// hostService is a service on the host's 127.0.0.1 that counts who
// reaches it.
func hostService(t *testing.T) (int, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "host secret\n")
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, &hits
}

// proxyRaw sends one request, as written, to the gateway's proxy from the
// guest and returns the status and body of the answer.
func (tn *testNet) proxyRaw(t *testing.T, req string) (int, string) {
	t.Helper()
	c, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(req, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	defer resp.Body.Close()
	if method == http.MethodConnect && resp.StatusCode == http.StatusOK {
		// Through the tunnel: ask for / and give back what answers.
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		inner, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return resp.StatusCode, ""
		}
		b, _ := io.ReadAll(inner.Body)
		return resp.StatusCode, string(b)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Hole 1 of issue 14: with the default policy the proxy reached a service
// on the host's 127.0.0.1 when asked for http://[::]:PORT/. No spelling of
// the host's loopback gets through the proxy, plain or CONNECT, and each
// attempt is refused with a line in the audit log.
func TestProxyRefusesEverySpellingOfTheHostsLoopback(t *testing.T) {
	port, hits := hostService(t)
	p := strconv.Itoa(port)
	tn := newTestNet(t, policy.Policy{})
	for _, host := range []string{
		"[::]", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::ffff:0.0.0.0]", "[::7f00:1]",
		"[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
		"0.0.0.0", "127.0.0.1", "127.1.2.3", "loopback.test", "[fe80::1%25lo]",
	} {
		status, body := tn.proxyRaw(t, "GET http://"+host+":"+p+"/ HTTP/1.1\r\nHost: "+host+":"+p+"\r\n\r\n")
		if status != http.StatusForbidden {
			t.Errorf("http://%s:%s/: %d %q", host, p, status, body)
			continue
		}
		if strings.Contains(body, "cowork policy allow") && !strings.HasPrefix(host, "[fe80") {
			t.Errorf("http://%s:%s/: the page suggests an allow that would not open it: %q", host, p, body)
		}
	}
	for _, hostport := range []string{"[::1]:" + p, "[::]:" + p, "[::ffff:127.0.0.1]:" + p, "0.0.0.0:" + p, "[64:ff9b::7f00:1]:" + p, "loopback.test:" + p} {
		if status, body := tn.proxyRaw(t, "CONNECT "+hostport+" HTTP/1.1\r\nHost: "+hostport+"\r\n\r\n"); status != http.StatusForbidden {
			t.Errorf("CONNECT %s: %d %q", hostport, status, body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the host's loopback service was reached %d times", n)
	}
	// Each refusal has its line, naming what was asked and why.
	for kind, host := range map[string]string{audit.KindHTTP: "::", audit.KindConnect: "::1"} {
		r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == kind && r.Name == host })
		if r.Verdict != audit.Deny || !strings.Contains(r.Rule, "private: ") {
			t.Errorf("%s %s: record %+v", kind, host, r)
		}
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "::ffff:127.0.0.1" })
	if r.Verdict != audit.Deny || r.Rule != "private: loopback 127.0.0.0/8" || r.Dst != "127.0.0.1:"+p {
		t.Errorf("record of a v4-mapped loopback: %+v", r)
	}
	// The page says how to reach a host service: expose its port.
	_, body := tn.proxyRaw(t, "GET http://[::]:"+p+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.Contains(body, "\n  cowork policy expose "+p+"\n") || !strings.Contains(body, "host.cowork.internal") {
		t.Errorf("the page for the host's loopback: %q", body)
	}
}

// A name that resolves to a public address and to the host's loopback
// reaches the public one through the proxy, never the loopback, and the
// line says what was skipped.
func TestProxyNameWithPublicAndLoopbackAddresses(t *testing.T) {
	port, hits := hostService(t)
	p := strconv.Itoa(port)
	tn := newTestNet(t, policy.Policy{})
	public := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "public\n") }))
	defer public.Close()
	tn.world.mu.Lock()
	tn.world.tcp["198.51.100.40:"+p] = public.Listener.Addr().String()
	tn.world.mu.Unlock()
	for _, name := range []string{"mixed.test", "mixed6.test"} {
		if status, body := tn.proxyRaw(t, "GET http://"+name+":"+p+"/ HTTP/1.1\r\nHost: "+name+"\r\n\r\n"); status != 200 || body != "public\n" {
			t.Errorf("http://%s:%s/: %d %q", name, p, status, body)
		}
		if status, body := tn.proxyRaw(t, "CONNECT "+name+":"+p+" HTTP/1.1\r\nHost: "+name+"\r\n\r\n"); status != 200 || body != "public\n" {
			t.Errorf("CONNECT %s:%s: %d %q", name, p, status, body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the host's loopback service was reached %d times", n)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "mixed6.test" })
	if r.Verdict != audit.Allow || r.Dst != "198.51.100.40:"+p || !strings.Contains(r.Rule, "; skipped ") || !strings.Contains(r.Rule, "127.0.0.1 (private: loopback") || !strings.Contains(r.Rule, "::1 (private: loopback") {
		t.Errorf("record %+v", r)
	}
}

// The proxy's pool of idle connections never carries a request to an
// address that was not decided for it: when a name moves, the next
// request goes where the name now resolves (and was judged), not down the
// connection kept from before.
func TestProxyPoolIsKeyedByTheCheckedAddress(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	for _, c := range []struct{ addr, says string }{{"198.51.100.50:80", "first"}, {"198.51.100.51:80", "second"}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, c.says) }))
		defer srv.Close()
		tn.world.mu.Lock()
		tn.world.tcp[c.addr] = srv.Listener.Addr().String()
		tn.world.mu.Unlock()
	}
	client := tn.proxyClient()
	get := func() string {
		resp, err := client.Get("http://moving.test/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	tn.world.setName("moving.test.", "198.51.100.50")
	if got := get(); got != "first" {
		t.Fatalf("first request: %q", got)
	}
	tn.world.setName("moving.test.", "198.51.100.51")
	if got := get(); got != "second" {
		t.Fatalf("after the name moved, the request went to %q", got)
	}
	// And when it moves to the host's loopback, nothing goes anywhere.
	tn.world.setName("moving.test.", "127.0.0.1")
	resp, err := client.Get("http://moving.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a name moved to the loopback: %d", resp.StatusCode)
	}
}

// The 403 page's commands carry the instance's --name, and in allowlist
// mode a name taken off the deny list must be allowed too.
func TestBlockedPageNamesTheInstance(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist, Deny: []string{"proxied-deny.test"}}, func(c *Config) { c.NameFlag = " --name dev" })
	for target, want := range map[string]string{
		"http://proxied-deny.test/":      "\n  cowork policy remove proxied-deny.test --name dev\n  cowork policy allow proxied-deny.test --name dev\n",
		"http://proxied.test/":           "\n  cowork policy allow proxied.test --name dev\n",
		"http://host.cowork.internal:5/": "on the host:\n  cowork policy expose 5 --name dev\n", // and nothing else
		"http://10.1.2.3/":               "\n  cowork policy allow 10.1.2.3 --name dev\n",
	} {
		status, body := tn.proxyRaw(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if status != http.StatusForbidden || !strings.Contains(body, want) {
			t.Errorf("%s: %d %q, want %q", target, status, body, want)
		}
	}
}

// HostLANs finds this machine's own addresses: a HostLANs that finds
// nothing would leave every LAN address of the host reachable, and the
// other tests pass LANs empty.
func TestHostLANsCoverThisMachine(t *testing.T) {
	lans := HostLANs()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		ip = ip.Unmap()
		found++
		covered := false
		for _, l := range lans {
			covered = covered || l.Contains(ip)
		}
		if !covered {
			t.Errorf("HostLANs %v leaves out this machine's %s", lans, ip)
		}
	}
	if found == 0 {
		t.Skip("no address outside loopback on this machine")
	}
}

// hostLANAddr is an IPv4 address of this machine outside loopback.
func hostLANAddr(t *testing.T) netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			ip, _ := netip.AddrFromSlice(ipn.IP.To4())
			return ip
		}
	}
	t.Skip("no IPv4 address outside loopback on this machine")
	return netip.Addr{}
}

// With the config's LANs left nil, as hostd leaves them, the host's own
// LAN address is denied as one, directly and through the proxy.
func TestDefaultConfigDeniesTheHostsLANAddress(t *testing.T) {
	lan := hostLANAddr(t)
	l, err := net.Listen("tcp", net.JoinHostPort(lan.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var hits atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	}()
	target := l.Addr().String()
	tn := newTestNet(t, policy.Policy{}, func(c *Config) { c.LANs = nil })
	tn.world.mu.Lock()
	tn.world.tcp[target] = target // a stack that let it through would reach it
	tn.world.mu.Unlock()
	if c, err := tn.dialTCP(t, target); err == nil {
		c.Close()
		t.Errorf("the host's LAN address %s answered", target)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == target })
	if r.Verdict != audit.Deny || !strings.Contains(r.Rule, "private: host LAN") {
		t.Errorf("record %+v", r)
	}
	if status, body := tn.proxyRaw(t, "GET http://"+target+"/ HTTP/1.1\r\nHost: x\r\n\r\n"); status != http.StatusForbidden || !strings.Contains(body, "host LAN") {
		t.Errorf("through the proxy: %d %q", status, body)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the host's LAN address was reached %d times", n)
	}
}
