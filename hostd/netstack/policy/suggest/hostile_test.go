package suggest

import (
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// hostileNames are names a guest can put in the audit log (it resolves
// them, or asks the proxy for them), each trying to get something into a
// proposed policy that means more than one name, or to fool whoever reads
// the proposal.
var hostileNames = []string{
	"*",                                   // everything
	"*.com",                               // a wildcard over a TLD
	"*.example.com",                       // any wildcard
	"0.0.0.0/0",                           // the whole internet, as a range
	"10.0.0.0/8",                          // a private range
	"::/0",                                // all of IPv6
	"evil.example.com\nallow 0.0.0.0/0",   // a second rule, by a line break
	"evil.example.com\rallow 0.0.0.0/0",   // by a carriage return
	"evil.example.com allow 10.0.0.0/8",   // by a space
	"a.example.com,b.example.com",         // a list
	"a.example.com;rm -rf",                // a command
	"evil.example.com # comment",          // a comment that hides the rest
	"x.example.com\x1b]52;c;ZXZpbA==\x07", // OSC 52: the clipboard
	"\x1b[2J\x1b[Hclean.example.com",      // clear the screen
	"moc.elgoog\u202e.example.com",        // a bidi override
	"g\u043e\u043egle.com",                // Cyrillic look-alikes
	"caf\xe9.example.com",                 // not UTF-8
	strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + ".com", // over 253
	strings.Repeat("x", 100000),      // absurd
	strings.Repeat("a", 64) + ".com", // a label over 63
	"localhost",                      // the guest's own loopback
	"metadata",                       // a search-domain name
	"metadata.google.internal",       // the cloud metadata service's name
	"printer.local",                  // mDNS
	"1.0.0.127.in-addr.arpa",         // a reverse lookup
	"127.1",                          // an address in another spelling
	"0x7f.1",                         // hexadecimal
	"2130706433.com.2130706433",      // a numeric last label
	"-leading.example.com",           // not a DNS name
	"api.example.com...",             // a clipped name
	"http://evil.example.com/",       // a URL
	"user@evil.example.com",          // an address book
	"evil.example.com:443",           // a port
	"[evil.example.com]",             // brackets
	"",                               // nothing (counted by address, if any)
}

// No hostile name gets into a proposed policy: each is rejected (shown
// only escaped), and the proposal holds the one honest name of the log.
// The guard is nameProblem; proposable stands behind it, and Finish fails
// rather than propose what it refuses (so this test fails with either
// guard removed).
func TestSuggestRejectsHostileNames(t *testing.T) {
	var recs []*audit.Record
	for i, name := range hostileNames {
		recs = append(recs, query(i, audit.Deny, name, "A", "allowlist: not listed"))
		recs = append(recs, flow(i, audit.KindConnect, audit.Deny, name, "", "allowlist: not listed"))
	}
	recs = append(recs, flow(99, audit.KindTCP, audit.Deny, "good.example.com", "198.51.100.1:443", "allowlist: good.example.com is not listed"))
	s := suggestFrom(t, writeLog(t, 0, recs...), policy.Policy{Mode: policy.ModeAllowlist}, Options{Group: true})

	if !slices.Equal(s.Policy.Allow, []string{"good.example.com"}) || !slices.Equal(s.Added, []string{"good.example.com"}) {
		t.Fatalf("proposed %q", s.Policy.Allow)
	}
	if len(s.Names) != 1 || len(s.Addrs) != 0 {
		t.Errorf("names %+v, addresses %+v", s.Names, s.Addrs)
	}
	// Each hostile name is rejected, except "" (no name: nothing to
	// count), a range that parses as one (0.0.0.0/0 is a range).
	if len(s.Rejected) != len(hostileNames)-1 {
		var got []string
		for _, r := range s.Rejected {
			got = append(got, r.Name)
		}
		t.Errorf("%d rejected, want %d: %q", len(s.Rejected), len(hostileNames)-1, got)
	}
	for _, r := range s.Rejected {
		if r.Reason == "" || r.Count != 2 || len(r.Name) > 131 {
			t.Errorf("rejected %q: %+v", r.Name, r)
		}
	}
}

// An address as the name (the proxy asked for an IP literal) counts as
// that address: a private or host one is never proposed, however spelled.
func TestSuggestNeverProposesPrivateAddresses(t *testing.T) {
	var recs []*audit.Record
	for i, a := range []string{"127.0.0.1", "[::1]", "::ffff:10.0.0.1", "fe80::1%eth0", "169.254.169.254", "0.0.0.0", "64:ff9b::a00:1", "2002:a00:1::1", "100.64.0.1", "192.168.127.254"} {
		recs = append(recs, flow(i, audit.KindHTTP, audit.Deny, a, "", "private"))
		recs = append(recs, flow(i, audit.KindTCP, audit.Deny, "", strings.Trim(a, "[]")+":80", "private"))
	}
	recs = append(recs, flow(50, audit.KindTCP, audit.Deny, "", "[2001:db8::1]:443", "private: documentation"))
	recs = append(recs, flow(51, audit.KindTCP, audit.Deny, "", "198.51.100.200:443", "private: host LAN 198.51.100.0/24"))
	s := suggestFrom(t, writeLog(t, 0, recs...), policy.Policy{Mode: policy.ModeAllowlist}, Options{})
	if len(s.Policy.Allow) != 0 {
		t.Errorf("proposed %q", s.Policy.Allow)
	}
	for _, d := range s.Addrs {
		if d.Status != StatusPrivate || d.Why == "" {
			t.Errorf("%s: %+v", d.Addr, d)
		}
	}
}

// proposable refuses on its own what nameProblem would: the second guard.
func TestProposableRefuses(t *testing.T) {
	for _, e := range []string{"*", "*.com", "*.example.com", "0.0.0.0/0", "10.0.0.1", "127.0.0.1", "198.51.100.0/24", "evil.example.com\nallow 0.0.0.0/0", "localhost", "a,b.example.com"} {
		if err := proposable(&Dest{Entry: e}, Options{}); err == nil {
			t.Errorf("%q proposed", e)
		}
	}
	if err := proposable(&Dest{Entry: "*.co.uk"}, Options{Group: true}); err == nil {
		t.Error("*.co.uk proposed with Group")
	}
	for _, e := range []string{"example.com", "198.51.100.7", "2001:4860::8888"} {
		if err := proposable(&Dest{Entry: e}, Options{}); err != nil {
			t.Errorf("%q refused: %v", e, err)
		}
	}
	if err := proposable(&Dest{Entry: "*.example.com"}, Options{Group: true}); err != nil {
		t.Errorf("*.example.com with Group: %v", err)
	}
}

// What the guest's own bytes claimed (TLS SNI, a Host header) is never
// evidence: only the name the flow was decided under counts.
func TestSuggestIgnoresClaimedNames(t *testing.T) {
	forged := flow(1, audit.KindTCP, audit.Allow, "", "198.51.100.5:443", "default")
	forged.ClaimedName, forged.ClaimedFrom, forged.NameMismatch = "bank.example.com", audit.FromSNI, true
	honest := flow(2, audit.KindTCP, audit.Allow, "good.example.com", "198.51.100.6:443", "default")
	honest.ClaimedName, honest.ClaimedFrom, honest.NameMismatch = "evil.example.com", audit.FromHost, true
	s := suggestFrom(t, writeLog(t, 0, forged, honest), policy.Policy{}, Options{})
	if !slices.Equal(s.Added, []string{"good.example.com", "198.51.100.5"}) {
		t.Errorf("proposed %q", s.Added)
	}
}
