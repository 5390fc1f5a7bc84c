//go:build linux

package netstack

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// Learn mode lets the guest reach what an allowlist does not list, and
// marks each such line "learn"; what the policy refuses on purpose stays
// refused: the host's loopback and unexposed ports, private and metadata
// addresses (each one served here, so that a hole would connect), the
// deny list, over a direct connection and through the proxy. Ending it
// puts the allowlist back.
func TestLearnModeKeepsWhatIsRefusedOnPurpose(t *testing.T) {
	port, hits := hostService(t)
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"allowed.test"}, Deny: []string{"blocked.test"}})
	for _, addr := range []string{"198.51.100.10:443", "198.51.100.11:443", "198.51.100.13:443", "10.0.0.5:443", "169.254.169.254:80", "100.64.0.1:80", "192.168.1.1:80"} {
		tn.world.serveTCP(t, addr, echo)
	}
	end := tn.Learn()
	if !tn.Learning() {
		t.Fatal("not learning")
	}

	// Learned: an unlisted name resolves, and its address connects.
	if m, err := tn.lookup(t, "other.test"); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("other.test in learn mode: %v %v", m, err)
	}
	q := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Name == "other.test" })
	if q.Verdict != audit.Allow || !q.Learn || !strings.HasPrefix(q.Rule, "learn:") {
		t.Errorf("the query's line: %+v", q)
	}
	for _, addr := range []string{"198.51.100.11:443", "198.51.100.13:443"} {
		c, err := tn.dialTCP(t, addr)
		if err != nil {
			t.Fatalf("%s in learn mode: %v", addr, err)
		}
		c.Close()
		r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == addr })
		if r.Verdict != audit.Allow || !r.Learn {
			t.Errorf("%s: %+v", addr, r)
		}
	}
	// Listed: allowed by the policy, not marked.
	tn.lookup(t, "allowed.test")
	if c, err := tn.dialTCP(t, "198.51.100.10:443"); err == nil {
		c.Close()
	}
	if r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.10:443" }); r.Verdict != audit.Allow || r.Learn {
		t.Errorf("a listed flow: %+v", r)
	}
	// A name on the deny list does not resolve.
	if m, _ := tn.lookup(t, "blocked.test"); m == nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("blocked.test resolved in learn mode: %v", m)
	}

	tn.lookup(t, "rebind.test") // a public name answering 10.0.0.5
	p := fmt.Sprint(port)
	for _, c := range []struct{ addr, rule string }{
		{"10.0.0.5:443", "rfc1918"},
		{"192.168.1.1:80", "rfc1918"},
		{"100.64.0.1:80", "cgnat"},
		{"169.254.169.254:80", "link-local"},
		{HostIP + ":" + p, "not exposed"},
		{GatewayIP + ":" + p, ""},
	} {
		if conn, err := tn.dialTCP(t, c.addr); err == nil {
			conn.Close()
			t.Errorf("%s connected in learn mode", c.addr)
		}
		if c.rule == "" {
			continue
		}
		r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == c.addr })
		if r.Verdict != audit.Deny || r.Learn || !strings.Contains(r.Rule, c.rule) {
			t.Errorf("%s: %+v, want denied by ~%q", c.addr, r, c.rule)
		}
	}
	// Through the proxy (the guest's own 127.0.0.1 is its own): the
	// host's loopback in any spelling, a name
	// leading to it, the metadata address, the deny list.
	for _, host := range []string{"127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "0.0.0.0", "loopback.test", "localhost", "169.254.169.254", "blocked.test", "rebind.test"} {
		for _, req := range []string{
			"GET http://" + host + ":" + p + "/ HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n",
			"CONNECT " + host + ":" + p + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
		} {
			if status, _ := tn.proxyRaw(t, req); status == 200 {
				t.Errorf("the proxy let %q through in learn mode", req)
			}
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the host's loopback service was reached %d times in learn mode", n)
	}

	// Learn mode ends: the allowlist again.
	end()
	end() // twice is once
	if tn.Learning() {
		t.Fatal("still learning")
	}
	if m, _ := tn.lookup(t, "udp.allowed.test"); m == nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("an unlisted name resolved after learn mode ended: %v", m)
	}
}

// Learn calls nest, an end called twice counts once (it never ends
// another learner's mode), and a policy set while learning is learned on.
func TestLearnModeNestsAndOutlivesAPolicyChange(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist})
	a, b := tn.Learn(), tn.Learn()
	a()
	if !tn.Learning() {
		t.Fatal("the first end ended both")
	}
	a()
	if !tn.Learning() {
		t.Fatal("the first end, called again, ended the other learner's mode")
	}
	if err := tn.SetPolicy(policy.Policy{Mode: policy.ModeAllowlist, Deny: []string{"other.test"}}); err != nil {
		t.Fatal(err)
	}
	if !tn.Learning() {
		t.Fatal("a policy change ended learn mode")
	}
	if m, _ := tn.lookup(t, "other.test"); m == nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("the new deny list was not applied while learning: %v", m)
	}
	b()
	if tn.Learning() {
		t.Fatal("still learning")
	}
}
