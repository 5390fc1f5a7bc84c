//go:build linux

package netstack

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// Hole 6 of issue 14: a flow's name in the audit log came from the
// guest's own SNI or Host header, so a guest could make its traffic to
// one place look like traffic to another. The name is now the one the
// guest resolved through the gateway (or the proxy resolved); the claim is
// kept apart and flagged when it does not fit.
func TestClaimedNamesAreRecordedApart(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls") }))
	defer tlsSrv.Close()
	var mu sync.Mutex
	var hosts []string // the Host headers the plain server saw
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		io.WriteString(w, "plain")
	}))
	defer plain.Close()
	tn.world.mu.Lock()
	for _, ip := range []string{"198.51.100.10", "198.51.100.11", "198.51.100.30"} {
		tn.world.tcp[ip+":443"] = tlsSrv.Listener.Addr().String()
		tn.world.tcp[ip+":80"] = plain.Listener.Addr().String()
	}
	tn.world.mu.Unlock()
	tn.lookup(t, "allowed.test") // 198.51.100.10, resolved through the gateway

	handshake := func(c net.Conn, sni string) {
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Errorf("handshake as %s: %v", sni, err)
		}
		tc.Close()
	}
	get := func(c net.Conn, host string) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		io.ReadAll(c)
		c.Close()
	}
	connect := func(hostport string) net.Conn {
		c, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", hostport, hostport)
		br := bufio.NewReader(c)
		if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %v %v", hostport, resp, err)
		}
		return c
	}
	direct := func(addr string) net.Conn {
		c, err := tn.dialTCP(t, addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	handshake(direct("198.51.100.10:443"), "bank.example")                            // a forged SNI
	get(direct("198.51.100.10:80"), "bank.example")                                   // a forged Host
	get(direct("198.51.100.10:80"), "allowed.test:80")                                // an honest one
	get(direct("198.51.100.11:80"), "other.test")                                     // a name never resolved through us
	handshake(connect("proxied.test:443"), "bank.example")                            // a forged SNI in a tunnel
	get(connect("proxied.test:80"), "bank.example")                                   // a forged Host in a tunnel
	handshake(connect("proxied.test:443"), "proxied.test")                            // an honest tunnel
	get(direct("198.51.100.30:80"), "198.51.100.30")                                  // an address for a name: fits
	tn.proxyRaw(t, "GET http://proxied.test/ HTTP/1.1\r\nHost: bank.example\r\n\r\n") // the proxy's own request

	for _, c := range []struct {
		kind, dst, claimed, from string
		name                     string
		mismatch                 bool
	}{
		{audit.KindTCP, "198.51.100.10:443", "bank.example", audit.FromSNI, "allowed.test", true},
		{audit.KindTCP, "198.51.100.10:80", "bank.example", audit.FromHost, "allowed.test", true},
		{audit.KindTCP, "198.51.100.10:80", "allowed.test", audit.FromHost, "allowed.test", false},
		{audit.KindTCP, "198.51.100.11:80", "other.test", audit.FromHost, "", true},
		{audit.KindConnect, "198.51.100.30:443", "bank.example", audit.FromSNI, "proxied.test", true},
		{audit.KindConnect, "198.51.100.30:80", "bank.example", audit.FromHost, "proxied.test", true},
		{audit.KindConnect, "198.51.100.30:443", "proxied.test", audit.FromSNI, "proxied.test", false},
		{audit.KindTCP, "198.51.100.30:80", "198.51.100.30", audit.FromHost, "proxied.test", false},
	} {
		r := tn.waitRecord(t, func(r *audit.Record) bool {
			return r.Kind == c.kind && r.Dst == c.dst && r.ClaimedName == c.claimed && r.Name == c.name
		})
		if r.ClaimedFrom != c.from || r.NameMismatch != c.mismatch || c.name != "" && r.NameFrom != map[string]string{audit.KindTCP: audit.FromDNS, audit.KindConnect: audit.FromProxy}[c.kind] {
			t.Errorf("%s %s claiming %s: record %+v", c.kind, c.dst, c.claimed, r)
		}
	}
	// Through the proxy's plain HTTP, the Host header is the proxy's own:
	// the server sees the name the request was decided for, and that is
	// the line's name.
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied.test" })
	if r.Verdict != audit.Allow || r.ClaimedName != "" || r.NameMismatch {
		t.Errorf("record %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := hosts[len(hosts)-1]; last != "proxied.test" {
		t.Errorf("the server behind the proxy saw Host %q", last)
	}
}

// host.cowork.internal, answered by the gateway itself, names the flows
// to it like any other answer: an honest Host header is no mismatch.
func TestLocalNamesNameTheirFlows(t *testing.T) {
	port, _ := hostService(t)
	tn := newTestNet(t, policy.Policy{HostPorts: []int{port}})
	tn.lookup(t, "host.cowork.internal")
	target := fmt.Sprintf("%s:%d", HostIP, port)
	c, err := tn.dialTCP(t, target)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: host.cowork.internal:%d\r\nConnection: close\r\n\r\n", port)
	io.ReadAll(c)
	c.Close()
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == target })
	if r.Name != "host.cowork.internal" || r.NameFrom != audit.FromDNS || r.ClaimedName != "host.cowork.internal" || r.NameMismatch {
		t.Fatalf("record %+v", r)
	}
}
