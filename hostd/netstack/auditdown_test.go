//go:build linux

package netstack

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// While the audit log cannot be written (a full disk), the guest's new
// traffic is refused: a connection, a proxied request, a relay call, a DNS
// query; a flow open before goes on. Once a line is written again (the
// next refusal's), traffic goes through again.
func TestNothingGoesOutOffTheRecord(t *testing.T) {
	var full atomic.Bool
	tn := newTestNet(t, policy.Policy{Deny: []string{"198.51.100.66"}}, func(c *Config) {
		al := c.Audit
		c.writeAudit = func(r *audit.Record) error {
			if full.Load() {
				return errors.New("write network.jsonl: no space left on device")
			}
			return al.Write(r)
		}
	})
	tn.world.serveTCP(t, "198.51.100.10:80", echo)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	defer srv.Close()
	tn.world.mu.Lock()
	tn.world.tcp["198.51.100.30:80"] = strings.TrimPrefix(srv.URL, "http://")
	tn.world.mu.Unlock()

	open, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := roundTrip(open, "before"); err != nil {
		t.Fatal(err)
	}
	// Connections to the proxy and the relay, open before, kept alive.
	proxy, relay := tn.proxyClient(), tn.guestClient()
	get := func(c *http.Client, req *http.Request) (int, string) {
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	proxied := func() (int, string) {
		req, _ := http.NewRequest("GET", "http://proxied.test/", nil)
		return get(proxy, req)
	}
	relayed := func() (int, string) {
		req, _ := http.NewRequest("POST", relayURL("/v1/messages"), strings.NewReader(`{"model":"x"}`))
		req.Header = apiKey(placeholderPrefix + "0000")
		return get(relay, req)
	}
	if code, _ := proxied(); code != 200 {
		t.Fatalf("a proxied request: %d", code)
	}
	if code, _ := relayed(); code != http.StatusUnauthorized {
		t.Fatalf("a relay call with an unknown placeholder: %d", code)
	}

	full.Store(true)
	if c, err := tn.dialTCP(t, "198.51.100.66:80"); err == nil { // its line fails
		c.Close()
		t.Fatal("a denied address answered")
	}
	if tn.auditDown() == "" {
		t.Fatal("a failed write did not take the audit log for down")
	}
	if c, err := tn.dialTCP(t, "198.51.100.10:80"); err == nil {
		c.Close()
		t.Error("a new connection went out while the audit log could not be written")
	}
	if m, err := tn.lookup(t, "allowed.test"); err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Errorf("a DNS query while the audit log could not be written: %v %v", m, err)
	}
	if code, body := proxied(); code != http.StatusForbidden || !strings.Contains(body, "audit") {
		t.Errorf("a proxied request while the audit log could not be written: %d %q", code, body)
	}
	if code, body := relayed(); code != http.StatusServiceUnavailable || !strings.Contains(body, "audit log") {
		t.Errorf("a relay call while the audit log could not be written: %d %s", code, body)
	}
	if _, err := tn.guestClient().Get(relayURL("/v1/models")); err == nil {
		t.Error("a new connection to the relay was taken while the audit log could not be written")
	}
	if err := roundTrip(open, "during"); err != nil {
		t.Errorf("a flow open before was cut: %v", err)
	}

	full.Store(false)
	if c, err := tn.dialTCP(t, "198.51.100.67:80"); err == nil { // a refusal whose line is written
		c.Close()
	}
	if tn.auditDown() != "" {
		t.Fatal("a written line did not open the way again")
	}
	c, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatalf("a connection once the log is written again: %v", err)
	}
	defer c.Close()
	if err := roundTrip(c, "after"); err != nil {
		t.Error(err)
	}
}
