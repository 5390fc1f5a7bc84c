package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Learn mode lets through only what the policy refuses for not being
// listed, and marks it; whatever the policy refuses on purpose stays
// refused, and the rules it was made from are left as they were.
func TestLearningWidensTheModeAlone(t *testing.T) {
	base := rules(t, Policy{Mode: ModeAllowlist, Allow: []string{"allowed.example", "10.9.0.0/16"}, Deny: []string{"denied.example", "198.51.100.66"}, HostPorts: []int{5432}})
	r := base.Learning()
	if !r.IsLearning() || base.IsLearning() {
		t.Fatal("Learning changed the rules it was made from")
	}
	check(t, r, []flowCase{
		{"198.51.100.1:443", []string{"new.example"}, true, "learn: new.example is not listed"},
		{"198.51.100.2:443", nil, true, "learn: 198.51.100.2 is not listed"},
		{"udp:198.51.100.3:3478", nil, true, "learn:"},
		{"198.51.100.4:443", []string{"allowed.example"}, true, "allow allowed.example"},
		{"10.9.1.1:22", nil, true, "allow 10.9.0.0/16"},
		// Refused on purpose: the same as without learn mode.
		{"198.51.100.5:443", []string{"denied.example"}, false, "deny denied.example"},
		{"198.51.100.66:443", nil, false, "deny 198.51.100.66"},
		{"10.1.2.3:22", []string{"new.example"}, false, "rfc1918"},
		{"172.16.0.1:80", nil, false, "rfc1918"},
		{"192.168.1.1:80", nil, false, "rfc1918"},
		{"100.64.0.1:80", nil, false, "cgnat"},
		{"169.254.169.254:80", []string{"metadata.example"}, false, "link-local"},
		{"[fd00::1]:80", nil, false, "ula"},
		{"[fe80::1]:80", nil, false, "link-local"},
		{"224.0.0.251:5353", nil, false, "multicast"},
		{"203.0.113.9:80", nil, false, "host LAN"},
		{"127.0.0.1:5432", nil, false, "loopback"},
		{"[::1]:5432", nil, false, "loopback"},
		{"0.0.0.0:80", nil, false, "unspecified"},
		{"[::ffff:127.0.0.1]:5432", nil, false, "loopback"},
		{"[64:ff9b::a00:1]:80", nil, false, "rfc1918"},
		{"[2002:a00:1::1]:80", nil, false, "6to4"},
		{"192.168.127.254:22", nil, false, "host port 22 is not exposed"},
		{"udp:192.168.127.254:5432", nil, false, "only TCP ports are exposed"},
		{"192.168.127.254:5432", nil, true, "host port 5432"},
	})
	for _, c := range []struct {
		name  string
		allow bool
		rule  string
	}{
		{"new.example", true, "learn: new.example is not listed"},
		{"allowed.example", true, "allow allowed.example"},
		{"denied.example", false, "deny denied.example"},
		{"sub.denied.example", true, "learn:"},
	} {
		v := r.CheckName(c.name)
		if v.Allow != c.allow || !strings.Contains(v.Rule, c.rule) || v.Learn != strings.HasPrefix(v.Rule, "learn:") {
			t.Errorf("name %s: %+v", c.name, v)
		}
	}
	// Only what learn mode let through is marked.
	if v := r.CheckFlow(TCP, flow("198.51.100.1:443"), []string{"allowed.example"}); v.Learn {
		t.Errorf("a listed flow marked learned: %+v", v)
	}
	if v := base.CheckFlow(TCP, flow("198.51.100.1:443"), []string{"new.example"}); v.Allow || v.Learn {
		t.Errorf("the base rules: %+v", v)
	}
	// Default mode lets the internet through without learn mode: nothing
	// is learn's there (its flows would otherwise end with learn mode, and
	// the suggestion count them as let through by it alone).
	def := rules(t, Policy{}).Learning()
	if v := def.CheckFlow(TCP, flow("198.51.100.1:443"), []string{"x.example"}); !v.Allow || v.Learn || v.Rule != "default" {
		t.Errorf("default mode, learning: %+v", v)
	}
	if v := def.CheckName("x.example"); !v.Allow || v.Learn || v.Rule != "default" {
		t.Errorf("default mode, learning, a name: %+v", v)
	}
}

func TestReserved(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1", "0.0.0.0", "::", "10.0.0.1", "169.254.169.254", "192.168.127.254", "100.64.1.1", "fd00::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "2001:db8::1", "ff02::1"} {
		if rule, ok := Reserved(netip.MustParseAddr(a)); !ok || !strings.Contains(rule, "private") {
			t.Errorf("%s: %q %v", a, rule, ok)
		}
	}
	for _, a := range []string{"198.51.100.1", "1.1.1.1", "2606:4700::1111", "64:ff9b::101:101"} {
		if rule, ok := Reserved(netip.MustParseAddr(a)); ok {
			t.Errorf("%s reserved: %q", a, rule)
		}
	}
}

func TestListedAndDeniedBy(t *testing.T) {
	r := rules(t, Policy{Allow: []string{"*.github.com", "Example.com.", "198.51.100.0/24"}, Deny: []string{"bad.github.com", "198.51.100.9"}})
	for _, c := range []struct {
		name, addr, allow, deny string
	}{
		{"api.github.com", "", "*.github.com", ""},
		{"github.com", "", "", ""},
		{"EXAMPLE.com", "", "Example.com.", ""},
		{"bad.github.com", "", "*.github.com", "bad.github.com"},
		{"", "198.51.100.9", "198.51.100.0/24", "198.51.100.9"},
		{"", "::ffff:198.51.100.1", "198.51.100.0/24", ""},
		{"", "203.0.113.1", "", ""},
	} {
		var a netip.Addr
		if c.addr != "" {
			a = netip.MustParseAddr(c.addr)
		}
		allow, _ := r.Listed(c.name, a)
		deny, _ := r.DeniedBy(c.name, a)
		if allow != c.allow || deny != c.deny {
			t.Errorf("%s %s: listed %q, denied by %q", c.name, c.addr, allow, deny)
		}
	}
}

// What Describe writes, ParseText reads back; comments and blank lines
// are skipped, and every bad line is named.
func TestParseText(t *testing.T) {
	p := Policy{Mode: ModeAllowlist, Allow: []string{"api.anthropic.com", "*.github.com", "198.51.100.0/24", "2001:db8::1"}, Deny: []string{"tracker.example.com"}, HostPorts: []int{5432, 80}}
	text := "# a comment\n\n" + strings.Join(p.Describe(), "\n") + "\n  # indented comment\nallow api.anthropic.com\n"
	got, err := ParseText(text)
	if err != nil || got.Mode != p.Mode || !slices.Equal(got.Allow, p.Allow) || !slices.Equal(got.Deny, p.Deny) || !slices.Equal(got.HostPorts, []int{80, 5432}) {
		t.Fatalf("%+v %v", got, err)
	}
	if got, err := ParseText(""); err != nil || got.Mode != "" || len(got.Allow) != 0 {
		t.Errorf("empty: %+v %v", got, err)
	}
	for _, c := range []struct{ text, want string }{
		{"mode: open", `line 1: mode "open"`},
		{"mode: allowlist\nmode: default", "line 2: a second mode (line 1 has one)"},
		{"allow *", `line 1: "*" is neither`},
		{"allow a.example b.example", `"a.example b.example" is neither`},
		{"deny *.*.example", "is neither"},
		{"host port 70000", "want host port 1 to 65535"},
		{"host port x", "want host port"},
		{"permit example.com", `"permit example.com" is not a rule`},
		{"allow\texample.com", "is not a rule"},
		{"allow example.com\r\nallow 0.0.0.0/0 ,x", `line 2: "0.0.0.0/0 ,x" is neither`},
		{strings.Repeat("bad\n", 20), "stopped at 10 errors"},
		{strings.Repeat("#", MaxText+1), "over 1024 KiB"},
	} {
		if _, err := ParseText(c.text); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: %v, want %q", c.text, err, c.want)
		}
	}
}
