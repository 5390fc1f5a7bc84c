//go:build linux

package netstack

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// echo answers with what it reads.
func echo(c net.Conn) { io.Copy(c, c) }

func TestDNSThroughTheGateway(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"blocked.test"}})
	m, err := tn.lookup(t, "allowed.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "198.51.100.10" {
		t.Fatalf("answer %v", m.Answer)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Name == "allowed.test" })
	if r.Verdict != audit.Allow || r.QType != "A" || len(r.Answers) != 1 || r.Answers[0] != "198.51.100.10" {
		t.Fatalf("record %+v", r)
	}

	m, err = tn.lookup(t, "blocked.test")
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
		t.Fatalf("a denied name resolved: %v", m)
	}
	r = tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Name == "blocked.test" })
	if r.Verdict != audit.Deny || r.Rule != "deny blocked.test" {
		t.Fatalf("record %+v", r)
	}

	// A CNAME chain binds every name in it to the address.
	tn.lookup(t, "cname.test")
	if names := tn.bindings.Names(mustAddr("198.51.100.10")); len(names) != 2 || names[0] != "allowed.test" || names[1] != "cname.test" {
		t.Errorf("CNAME chain bound as %v", names)
	}

	m, _ = tn.lookup(t, "host.cowork.internal")
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != HostIP {
		t.Fatalf("host.cowork.internal: %v", m.Answer)
	}
}

func TestTCPAllowedFlowIsCountedExactly(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.10:80", echo)
	tn.lookup(t, "allowed.test") // binds the name to the address
	c, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("0123456789", 10000) // 100,000 bytes
	go func() { io.WriteString(c, payload); c.(interface{ CloseWrite() error }).CloseWrite() }()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != payload {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.10:80" })
	if r.Verdict != audit.Allow || r.Name != "allowed.test" || r.NameFrom != audit.FromDNS || r.BytesOut != 100000 || r.BytesIn != 100000 || r.GuestPort == 0 || r.Start.IsZero() {
		t.Fatalf("record %+v", r)
	}
}

func TestHostLoopbackOnlyWhenExposed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "host service\n")
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	target := HostIP + ":" + itoaTest(port)

	closed := newTestNet(t, policy.Policy{})
	if c, err := closed.dialTCP(t, target); err == nil {
		c.Close()
		t.Fatal("the host's loopback answered without an exposure")
	}
	r := closed.waitRecord(t, func(r *audit.Record) bool { return r.Dst == target })
	if r.Verdict != audit.Deny || !strings.Contains(r.Rule, "not exposed") {
		t.Fatalf("record %+v", r)
	}
	// The gateway's own address does not lead to the host's loopback either.
	if c, err := closed.dialTCP(t, GatewayIP+":"+itoaTest(port)); err == nil {
		c.Close()
		t.Fatal("the host's loopback answered through the gateway address")
	}

	open := newTestNet(t, policy.Policy{HostPorts: []int{port}})
	c, err := open.dialTCP(t, target)
	if err != nil {
		t.Fatalf("exposed host port: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "host service\n" {
		t.Fatalf("got %q", got)
	}
}

func TestPolicyCases(t *testing.T) {
	tn := newTestNet(t, policy.Policy{
		Mode:  policy.ModeAllowlist,
		Allow: []string{"allowed.test", "*.wild.test", "198.51.100.11"},
		Deny:  []string{"api.allowed.test"},
	})
	for _, addr := range []string{"198.51.100.10:443", "198.51.100.11:443", "198.51.100.12:443", "198.51.100.14:443", "10.0.0.5:443", "198.51.100.13:443"} {
		tn.world.serveTCP(t, addr, echo)
	}
	for _, name := range []string{"allowed.test", "sub.wild.test", "api.allowed.test", "rebind.test", "blocked.test"} {
		tn.lookup(t, name)
	}
	for _, c := range []struct {
		addr  string
		allow bool
		rule  string
	}{
		{"198.51.100.10:443", true, "allow allowed.test"},  // through its allowed answer
		{"198.51.100.14:443", true, "allow *.wild.test"},   // a wildcard
		{"198.51.100.11:443", true, "allow 198.51.100.11"}, // an allowed address
		{"198.51.100.12:443", false, "not listed"},         // its name was denied at DNS, so never bound
		{"198.51.100.13:443", false, "not listed"},         // unlisted name
		{"10.0.0.5:443", false, "rfc1918"},                 // rebinding to a private address
		{"198.51.100.99:443", false, "not listed"},         // an IP literal nobody resolved
		{"169.254.169.254:80", false, "link-local"},        // the metadata address
	} {
		conn, err := tn.dialTCP(t, c.addr)
		if (err == nil) != c.allow {
			t.Errorf("%s: connected=%v, want %v (%v)", c.addr, err == nil, c.allow, err)
		}
		if conn != nil {
			conn.Close()
		}
		r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == c.addr })
		if (r.Verdict == audit.Allow) != c.allow || !strings.Contains(r.Rule, c.rule) {
			t.Errorf("%s: record %+v, want rule ~%q", c.addr, r, c.rule)
		}
	}
	// In allowlist mode an unlisted name does not even resolve.
	if m, _ := tn.lookup(t, "other.test"); m.Rcode != dns.RcodeNameError {
		t.Errorf("an unlisted name resolved in allowlist mode: %v", m)
	}
}

func TestPolicyChangesApplyToNewFlows(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.10:80", echo)
	c, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := tn.SetPolicy(policy.Policy{Deny: []string{"198.51.100.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if c, err := tn.dialTCP(t, "198.51.100.10:80"); err == nil {
		c.Close()
		t.Fatal("a denied destination connected after the policy changed")
	}
	if err := tn.SetPolicy(policy.Policy{Mode: "bogus"}); err == nil {
		t.Fatal("a bad policy was accepted")
	}
}

func itoaTest(i int) string { return strconv.Itoa(i) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// A guest that escapes a dot in a label ("exfil\.allowed.test" is the
// label "exfil.allowed" under test) gets no answer for a name outside
// the allowlist: its text does not pass for a name under allowed.test.
func TestDNSEscapedDotIsNotASubdomain(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"*.allowed.test"}})
	m, err := tn.lookup(t, `exfil\.allowed.test`)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
		t.Fatalf("an escaped name resolved in allowlist mode: %v", m)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && strings.Contains(r.Name, "exfil") })
	if r.Verdict != audit.Deny || !strings.Contains(r.Rule, "not listed") {
		t.Fatalf("record %+v", r)
	}
}
