//go:build linux

package netstack

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// While the audit log cannot be written (a full disk), the guest's new
// traffic is refused: a connection, a proxied request, a relay call, a DNS
// query; a flow open before goes on. Once a line is written again (the
// next refusal's), traffic goes through again.
func TestNothingGoesOutOffTheRecord(t *testing.T) {
	var full, unencodable atomic.Bool
	var refusedToEncode atomic.Int64 // records the hook failed as unencodable
	tn := newTestNet(t, policy.Policy{Deny: []string{"198.51.100.66", "198.51.100.68"}}, func(c *Config) {
		al := c.Audit
		c.writeAudit = func(r *audit.Record) error {
			switch {
			case full.Load():
				return fmt.Errorf("audit: %w", &fs.PathError{Op: "write", Path: "/home/someone/.cowork/sandbox/network.jsonl", Err: syscall.ENOSPC})
			case unencodable.Load():
				refusedToEncode.Add(1)
				return fmt.Errorf("audit: encode: %w", &json.UnsupportedValueError{Str: "NaN"})
			}
			return al.Write(r)
		}
	})
	waitDown := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); (tn.auditDown() != "") != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the audit log taken for down: %v, want %v", !want, want)
			}
		}
	}
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

	// A record that cannot be encoded is no full disk.
	unencodable.Store(true)
	if c, err := tn.dialTCP(t, "198.51.100.68:80"); err == nil {
		c.Close()
	}
	// The refusal's line is written after the guest has its reset.
	for deadline := time.Now().Add(5 * time.Second); refusedToEncode.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the refusal's line was never written")
		}
	}
	if why := tn.auditDown(); why != "" {
		t.Fatalf("a record that could not be encoded took the log for down: %s", why)
	}
	unencodable.Store(false)

	full.Store(true)
	if c, err := tn.dialTCP(t, "198.51.100.66:80"); err == nil { // its line fails
		c.Close()
		t.Fatal("a denied address answered")
	}
	waitDown(true)
	if c, err := tn.dialTCP(t, "198.51.100.10:80"); err == nil {
		c.Close()
		t.Error("a new connection went out while the audit log could not be written")
	}
	if m, err := tn.lookup(t, "allowed.test"); err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Errorf("a DNS query while the audit log could not be written: %v %v", m, err)
	}
	if code, body := proxied(); code != http.StatusForbidden || !strings.Contains(body, "audit log") || strings.Contains(body, "someone") {
		t.Errorf("a proxied request while the audit log could not be written (the host's path is not the guest's business): %d %q", code, body)
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
	waitDown(false)
	gap := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindGap })
	if gap.Suppressed < 5 || gap.Start.IsZero() || !gap.Time.After(gap.Start) {
		t.Errorf("the gap's line: %+v", gap)
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

// A request in a tunnel to a host the instance holds secrets for, open
// before the audit log went down, is refused too: the secret does not go
// out off the record.
func TestSecretsStayHomeWhileTheAuditIsDown(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	c := sn.proxiedClient(sn.guestRoot)
	h := http.Header{"Authorization": {"Bearer " + testPlaceholder}}
	if resp, body := get(t, c, "https://gh.test/user", h); resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	rule := auditDownRule
	sn.auditFailure.Store(&rule)
	if resp, body := get(t, c, "https://gh.test/user", h); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "audit log") {
		t.Errorf("a request in an open tunnel while the audit log was down: %d %q", resp.StatusCode, body)
	}
}

// newFillableNet is a test network whose audit log's disk is full
// while the flag it returns is set.
func newFillableNet(t *testing.T) (*testNet, *atomic.Bool) {
	full := new(atomic.Bool)
	tn := newTestNet(t, policy.Policy{}, func(c *Config) {
		al := c.Audit
		c.writeAudit = func(r *audit.Record) error {
			if full.Load() {
				return fmt.Errorf("audit: %w", &fs.PathError{Op: "write", Path: "network.jsonl", Err: syscall.ENOSPC})
			}
			return al.Write(r)
		}
	})
	return tn, full
}

// No way in opens off the record either: a publish whose line fails is
// taken back and takes the log for down, as the guest's traffic does;
// while it is down, a port is not published (asked for, or followed from
// the guest's listening).
func TestNoPortOpensOffTheRecord(t *testing.T) {
	tn, full := newFillableNet(t)
	full.Store(true)
	if p, err := tn.Publish("127.0.0.1:0", 8000); err == nil {
		t.Fatalf("a publish whose line failed went through: %+v", p)
	}
	if tn.auditDown() == "" {
		t.Fatal("a publish whose line failed left the audit taken for up")
	}
	if ports := tn.Ports(); len(ports) != 0 {
		t.Errorf("ports published off the record: %+v", ports)
	}
	for name, publish := range map[string]func() (Port, error){
		"asked":    func() (Port, error) { return tn.Publish("127.0.0.1:0", 8001) },
		"udp":      func() (Port, error) { return tn.PublishUDP("127.0.0.1:0", 8002) },
		"followed": func() (Port, error) { return tn.PublishAuto("", "127.0.0.1:0", 8003) },
	} {
		if p, err := publish(); err == nil || !strings.Contains(err.Error(), "audit") {
			t.Errorf("%s: published %+v while the audit was down (%v)", name, p, err)
		}
	}
	full.Store(false)
	if _, err := tn.Publish("127.0.0.1:0", 8001); err != nil {
		t.Errorf("publish once the log is back: %v", err)
	}
}

// A publish refused while the log is down tries the log itself: once it
// can be written, the next publish goes through with no other line
// written first (a quiet guest writes none).
func TestAPublishBringsTheLogBack(t *testing.T) {
	tn, full := newFillableNet(t)
	full.Store(true)
	tn.write(&audit.Record{Kind: audit.KindDNS, Verdict: audit.Deny, Name: "lost.example"})
	if _, err := tn.Publish("127.0.0.1:0", 8000); err == nil {
		t.Fatal("published while the log was down")
	}
	full.Store(false)
	if _, err := tn.Publish("127.0.0.1:0", 8000); err != nil {
		t.Fatalf("the first publish once the log can be written: %v", err)
	}
	if tn.auditDown() != "" {
		t.Error("the log is still taken for down")
	}
}
