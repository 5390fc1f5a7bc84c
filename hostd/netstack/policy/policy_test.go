package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var hostIP = netip.MustParseAddr("192.168.127.254")

func rules(t *testing.T, p Policy) *Rules {
	t.Helper()
	r, err := Compile(p, hostIP, []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func flow(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

type flowCase struct {
	dst   string // ip:port, TCP; "udp:" in front for UDP
	names []string
	allow bool
	rule  string
}

func check(t *testing.T, r *Rules, cases []flowCase) {
	t.Helper()
	for _, c := range cases {
		proto, dst := TCP, c.dst
		if rest, ok := strings.CutPrefix(dst, "udp:"); ok {
			proto, dst = UDP, rest
		}
		v := r.CheckFlow(proto, flow(dst), c.names)
		if v.Allow != c.allow || !strings.Contains(v.Rule, c.rule) {
			t.Errorf("%s %v: got %+v, want allow=%v rule ~%q", c.dst, c.names, v, c.allow, c.rule)
		}
	}
}

func TestDefaultModeDeniesPrivateNetworks(t *testing.T) {
	r := rules(t, Policy{HostPorts: []int{5432}})
	check(t, r, []flowCase{
		{"93.184.216.34:443", []string{"example.com"}, true, "default"},
		{"1.1.1.1:53", nil, true, "default"}, // an IP literal on the internet
		{"[2606:4700::1111]:443", nil, true, "default"},
		{"10.1.2.3:22", nil, false, "rfc1918"},
		{"172.20.0.1:80", nil, false, "rfc1918"},
		{"192.168.1.1:80", nil, false, "rfc1918"},
		{"100.100.100.100:80", nil, false, "cgnat"},
		{"169.254.169.254:80", nil, false, "link-local"},
		{"168.63.129.16:32526", nil, false, "azure-platform"},
		{"[fe80::1]:80", nil, false, "link-local"},
		{"[fd00::1]:80", nil, false, "ula"},
		{"224.0.0.251:5353", nil, false, "multicast"},
		{"255.255.255.255:67", nil, false, "reserved"},
		{"127.0.0.1:5432", nil, false, "loopback"},
		{"[::1]:5432", nil, false, "loopback"},
		{"203.0.113.7:22", nil, false, "host LAN"},
		{"[::ffff:10.0.0.1]:80", nil, false, "rfc1918"}, // a v4-mapped address is still private
		// The host's loopback only on exposed ports.
		{"192.168.127.254:5432", nil, true, "host port 5432"},
		{"192.168.127.254:6379", nil, false, "host port 6379 is not exposed"},
		// Rebinding: an allowed-looking name that resolved to a private address.
		{"192.168.1.10:80", []string{"evil.example.com"}, false, "rfc1918"},
	})
}

func TestAllowlistMode(t *testing.T) {
	r := rules(t, Policy{Mode: ModeAllowlist, Allow: []string{"api.anthropic.com", "*.github.com", "198.51.100.0/24", "10.9.9.9"}})
	check(t, r, []flowCase{
		{"160.79.104.10:443", []string{"api.anthropic.com"}, true, "allow api.anthropic.com"},
		{"140.82.112.3:443", []string{"codeload.github.com"}, true, "allow *.github.com"},
		{"140.82.112.4:443", []string{"github.com"}, false, "not listed"}, // *.github.com is not the apex
		{"93.184.216.34:443", []string{"example.com"}, false, "not listed"},
		{"93.184.216.34:443", nil, false, "not listed"}, // the IP literal of anything unlisted
		{"198.51.100.7:80", nil, true, "allow 198.51.100.0/24"},
		{"10.9.9.9:443", nil, true, "allow 10.9.9.9/32"}, // an explicit CIDR opens a private address
		{"10.9.9.10:443", nil, false, "rfc1918"},
		// An allowed name that resolved to a private address is still denied.
		{"10.0.0.5:443", []string{"api.anthropic.com"}, false, "rfc1918"},
		// A name the guest resolved with an escaped dot is not under the
		// listed domain.
		{"140.82.112.5:443", []string{`evil\.github.com`}, false, "not listed"},
	})
	for name, want := range map[string]bool{"api.anthropic.com": true, "API.Anthropic.com.": true, "x.github.com": true, "exfil.attacker.net": false,
		// Escaped dots: names under com and under anthropic.com, not
		// under github.com or the listed name.
		`exfil\.github.com`: false, `x.exfil\.github.com.`: false, `api\.anthropic.com`: false, `api.anthropic\.com`: false} {
		if got := r.CheckName(name).Allow; got != want {
			t.Errorf("CheckName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestDenyListAlwaysWins(t *testing.T) {
	r := rules(t, Policy{Mode: ModeAllowlist, Allow: []string{"*.example.com", "198.51.100.0/24"}, Deny: []string{"bad.example.com", "198.51.100.66"}})
	check(t, r, []flowCase{
		{"198.51.100.5:443", []string{"good.example.com"}, true, "allow"},
		{"198.51.100.5:443", []string{"good.example.com", "bad.example.com"}, false, "deny bad.example.com"},
		{"198.51.100.66:443", nil, false, "deny 198.51.100.66/32"},
		{"198.51.100.66:443", []string{"good.example.com"}, false, "deny 198.51.100.66/32"},
	})
	if v := r.CheckName("bad.example.com"); v.Allow || v.Rule != "deny bad.example.com" {
		t.Errorf("CheckName: %+v", v)
	}
	d := rules(t, Policy{Deny: []string{"*.tracker.io"}})
	if d.CheckName("x.tracker.io").Allow || !d.CheckName("tracker.io.example").Allow {
		t.Error("deny patterns in default mode")
	}
}

// A name with escapes is matched by its labels, decoded: one under a
// denied domain stays denied ("x\.y.tracker.io" is the label "x.y" under
// tracker.io, which its name servers answer), one that only reads as
// under a listed domain is not under it, and case is folded for ASCII
// alone.
func TestEscapedNamesMatchByTheirLabels(t *testing.T) {
	d := rules(t, Policy{Deny: []string{"*.tracker.io", "ads.example.net"}, Allow: []string{"*.kernel.org"}})
	for name, allow := range map[string]bool{
		`x\.y.tracker.io`: false, `a\000.tracker.io.`: false, `\120.tracker.io`: false, `x\\.tracker.io`: false, `\065\.b.Tracker.IO`: false,
		`\097ds.example.net`: false, `ads.example\.net`: true, `x.tracker\.io`: true, `tracker\.io`: true, `x.tracker.io\`: true,
	} {
		if got := d.CheckName(name).Allow; got != allow {
			t.Errorf("default mode, CheckName(%q) = %v, want %v", name, got, allow)
		}
	}
	check(t, d, []flowCase{
		{"93.184.216.34:443", []string{`x\.y.tracker.io`}, false, "deny *.tracker.io"},
		{"93.184.216.34:443", []string{`x.tracker\.io`}, true, "default"},
	})
	a := rules(t, Policy{Mode: ModeAllowlist, Allow: []string{"*.kernel.org"}})
	for name, allow := range map[string]bool{
		`x\.y.kernel.org`: true, `cdn\.kernel.org`: false, `x.\226\132\170ernel.org`: false, `x.\075ernel.org`: true, `x.kernel.org\.`: false, `\999.kernel.org`: false,
	} {
		if got := a.CheckName(name).Allow; got != allow {
			t.Errorf("allowlist mode, CheckName(%q) = %v, want %v", name, got, allow)
		}
	}
}

func TestBadEntries(t *testing.T) {
	for _, p := range []Policy{
		{Mode: "open"},
		{Allow: []string{"exa mple.com"}},
		{Allow: []string{"*"}},
		{Allow: []string{"a.*.com"}},
		{Deny: []string{"300.1.1.1/8"}},
		{HostPorts: []int{0}},
		{HostPorts: []int{70000}},
	} {
		if _, err := Compile(p, hostIP, nil); err == nil {
			t.Errorf("%+v compiled", p)
		}
	}
}

// An entry is refused, not trimmed, when white space surrounds it or a
// control character is in it: it would be saved and shown as written,
// and "\r0.0.0.0/0" printed on a terminal hides what it is.
func TestEntriesWithWhiteSpaceOrControlsAreRefused(t *testing.T) {
	for _, e := range []string{"\r0.0.0.0/0", "example.com\v", " example.com", "example.com ", "\t10.0.0.0/8", "0.0.0.0/0\n", "example.com\x00", "\u0085example.com", "example.com\u00a0"} {
		if d, p, err := ParseEntry(e); err == nil {
			t.Errorf("ParseEntry(%q) = %q %v", e, d, p)
		}
		if _, err := Compile(Policy{Mode: ModeAllowlist, Allow: []string{e}}, hostIP, nil); err == nil {
			t.Errorf("allow %q compiled", e)
		}
		if _, err := Compile(Policy{Deny: []string{e}}, hostIP, nil); err == nil {
			t.Errorf("deny %q compiled", e)
		}
	}
	for _, e := range []string{"example.com", "*.example.com", "0.0.0.0/0", "::ffff:10.0.0.1"} {
		if _, _, err := ParseEntry(e); err != nil {
			t.Errorf("ParseEntry(%q): %v", e, err)
		}
	}
}

func TestBindings(t *testing.T) {
	b := NewBindings()
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	a := netip.MustParseAddr("140.82.112.3")
	b.Add(a, 30*time.Second, "GitHub.com.", "lb.github.com")
	if got := b.Names(a); len(got) != 2 || got[0] != "github.com" || got[1] != "lb.github.com" {
		t.Fatalf("names: %v", got)
	}
	if got := b.Names(netip.MustParseAddr("::ffff:140.82.112.3")); len(got) != 2 {
		t.Fatalf("a v4-mapped address: %v", got)
	}
	now = now.Add(MinBinding + time.Second)
	if got := b.Names(a); len(got) != 0 {
		t.Fatalf("expired names: %v", got)
	}
}
