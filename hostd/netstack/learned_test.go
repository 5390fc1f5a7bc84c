//go:build linux

package netstack

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// echoes reports whether c answers a line with itself within a few seconds.
func echoes(c net.Conn, r *bufio.Reader, line string) bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return false
	}
	got, err := r.ReadString('\n')
	return err == nil && got == line+"\n"
}

// A flow learn mode alone let through ends with learn mode: a guest that
// opened a tunnel while learning keeps no exit through the allowlist
// after (a direct TCP connection, a CONNECT tunnel through the proxy, a
// UDP flow). Learn calls nest: the flows end with the last end, not the
// first, and a flow the policy itself allows stays open.
func TestLearnedFlowsEndWithLearnMode(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"198.51.100.10"}})
	tn.world.serveTCP(t, "198.51.100.10:443", echo)
	tn.world.serveTCP(t, "198.51.100.11:443", echo)
	tn.world.serveUDPEcho(t, "198.51.100.21:5353")

	outer, end := tn.Learn(), tn.Learn()
	direct, err := tn.dialTCP(t, "198.51.100.11:443")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	directR := bufio.NewReader(direct)
	listed, err := tn.dialTCP(t, "198.51.100.10:443")
	if err != nil {
		t.Fatal(err)
	}
	defer listed.Close()
	listedR := bufio.NewReader(listed)
	tunnel, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	tunnelR := bufio.NewReader(tunnel)
	io.WriteString(tunnel, "CONNECT 198.51.100.11:443 HTTP/1.1\r\nHost: 198.51.100.11:443\r\n\r\n")
	tunnel.SetDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(tunnelR, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT in learn mode: %v %v", resp, err)
	}
	udp, err := tn.guest.DialUDP("198.51.100.21:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpR := bufio.NewReader(udp)
	for name, c := range map[string]struct {
		c net.Conn
		r *bufio.Reader
	}{"direct": {direct, directR}, "listed": {listed, listedR}, "tunnel": {tunnel, tunnelR}, "udp": {udp, udpR}} {
		if !echoes(c.c, c.r, "learning") {
			t.Fatalf("%s: no echo in learn mode", name)
		}
	}

	outer()
	if !echoes(direct, directR, "nested") || !echoes(udp, udpR, "nested") {
		t.Fatal("a learned flow ended with the first of two learn calls")
	}
	end()
	for name, c := range map[string]struct {
		c net.Conn
		r *bufio.Reader
	}{"direct": {direct, directR}, "tunnel": {tunnel, tunnelR}, "udp": {udp, udpR}} {
		if echoes(c.c, c.r, "after") {
			t.Errorf("%s: a learned flow outlived learn mode", name)
		}
	}
	if !echoes(listed, listedR, "after") {
		t.Error("a flow the policy allows ended with learn mode")
	}

	// Each line says learn mode let it through; the UDP flow's and the
	// tunnel's too.
	for _, c := range []struct{ kind, dst string }{
		{audit.KindTCP, "198.51.100.11:443"},
		{audit.KindConnect, "198.51.100.11:443"},
		{audit.KindUDP, "198.51.100.21:5353"},
	} {
		r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == c.kind && r.Dst == c.dst && r.Verdict == audit.Allow })
		if !r.Learn || !strings.HasPrefix(r.Rule, "learn:") {
			t.Errorf("%s %s: %+v", c.kind, c.dst, r)
		}
	}
}

// A request through the proxy that learn mode let through is cut when it
// ends: an answer still coming stops.
func TestLearnedProxyRequestEndsWithLearnMode(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist})
	tn.world.serveTCP(t, "198.51.100.11:80", func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nx")
		io.Copy(io.Discard, c) // the rest never comes
	})
	end := tn.Learn()
	c, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET in learn mode: %v %v", resp, err)
	}
	end()
	start := time.Now()
	io.ReadAll(resp.Body)
	if time.Since(start) > 5*time.Second {
		t.Error("an answer to a learned request went on after learn mode ended")
	}
}

// Through the proxy, a name only learn mode lets through is learn's, even
// when an allow entry covers the address it resolves to: without learn
// mode the request is refused, so its line must not read as the policy's
// allow.
func TestLearnedNameThroughProxyIsMarked(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"198.51.100.0/24"}})
	tn.world.serveTCP(t, "198.51.100.11:80", func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	const req = "GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"
	if status, _ := tn.proxyRaw(t, req); status != http.StatusForbidden {
		t.Fatalf("without learn mode: %d", status)
	}
	end := tn.Learn()
	defer end()
	if status, body := tn.proxyRaw(t, req); status != 200 || body != "ok" {
		t.Fatalf("in learn mode: %d %q", status, body)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Verdict == audit.Allow })
	if !r.Learn || !strings.HasPrefix(r.Rule, "learn: other.test") {
		t.Errorf("the request's line: %+v", r)
	}
}

// A flow learn mode let through that a limit then refuses is a denial,
// not learn's.
func TestLearnedFlowOverALimitIsADenial(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist}, func(c *Config) { c.Limits.MaxFlows = 1 })
	tn.world.serveTCP(t, "198.51.100.11:443", echo)
	end := tn.Learn()
	defer end()
	first, err := tn.dialTCP(t, "198.51.100.11:443")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if c, err := tn.dialTCP(t, "198.51.100.11:443"); err == nil {
		c.Close()
		t.Fatal("a flow over the limit connected")
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Verdict == audit.Deny })
	if r.Learn || !strings.HasPrefix(r.Rule, "limit:") {
		t.Errorf("the refusal's line: %+v", r)
	}
}

// In default mode learn mode changes no verdict: nothing is marked
// learned, and a flow opened while learning stays open after, as the
// policy allows it anyway.
func TestLearnModeInDefaultModeMarksNothing(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.11:443", echo)
	end := tn.Learn()
	c, err := tn.dialTCP(t, "198.51.100.11:443")
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	end()
	if !echoes(c, r, "after") {
		t.Error("a flow the default policy allows ended with learn mode")
	}
	c.Close()
	rec := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.11:443" })
	if rec.Learn || rec.Rule != "default" {
		t.Errorf("the flow's line: %+v", rec)
	}
}
