//go:build linux

package netstack

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// outsideProxy serves tn's proxy on a loopback listener, as the egress
// proxy of a cluster serves its sandboxes, and returns a client of it.
func outsideProxy(t *testing.T, tn *testNet) (*http.Client, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go tn.ServeProxyOn(l)
	u, _ := url.Parse("http://" + l.Addr().String())
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}, l.Addr().String()
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
