package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":            "127.0.0.1",
		"8.8.8.8":              "8.8.8.8",
		"::ffff:127.0.0.1":     "127.0.0.1",
		"::ffff:7f00:1":        "127.0.0.1",
		"::ffff:10.0.0.1%eth0": "10.0.0.1",
		"::7f00:1":             "127.0.0.1", // IPv4-compatible
		"::127.0.0.1":          "127.0.0.1",
		"::a00:1":              "10.0.0.1",
		"::2":                  "0.0.0.2",
		"::":                   "::", // unspecified stays: it is its own rule
		"::1":                  "::1",
		"64:ff9b::7f00:1":      "127.0.0.1", // NAT64, well-known prefix
		"64:ff9b::8.8.8.8":     "8.8.8.8",
		"fe80::1%eth0":         "fe80::1",
		"2002:7f00:1::":        "2002:7f00:1::", // a tunnel is dialled as itself; Embedded judges what it carries
		"2606:4700::1111":      "2606:4700::1111",
		"64:ff9b:1::7f00:1":    "64:ff9b:1::7f00:1",
	} {
		if got := Canonical(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) || got.Zone() != "" {
			t.Errorf("Canonical(%s) = %s, want %s", in, got, want)
		}
	}
	if got := CanonicalPort(netip.MustParseAddrPort("[::ffff:1.2.3.4]:80")); got != netip.MustParseAddrPort("1.2.3.4:80") {
		t.Errorf("CanonicalPort: %s", got)
	}
}

func TestEmbedded(t *testing.T) {
	for in, want := range map[string][]string{
		"2002:7f00:1::":                          {"6to4 127.0.0.1"},
		"2002:c0a8:101::1":                       {"6to4 192.168.1.1"},
		"2001:0:4136:e378:8000:63bf:3fff:fdd2":   {"teredo server 65.54.227.120", "teredo client 192.0.2.45"}, // RFC 4380's example
		"2001:0:a00:1:8000:63bf:80ff:fffe":       {"teredo server 10.0.0.1", "teredo client 127.0.0.1"},
		"2606:4700::5efe:7f00:1":                 {"isatap 127.0.0.1"},
		"2606:4700::200:5efe:a00:1":              {"isatap 10.0.0.1"},
		"64:ff9b:1::7f00:1":                      {"nat64 local-use 0.0.0.0", "nat64 local-use 127.0.0.1"},
		"64:ff9b:1:7f00:0:100::":                 {"nat64 local-use 127.0.0.1", "nat64 local-use 0.0.0.0"},
		"2606:4700::1111":                        nil,
		"127.0.0.1":                              nil,
		"2001:0:4136:e378:8000:63bf:5efe:7f00":   {"teredo server 65.54.227.120", "teredo client 161.1.128.255"}, // not isatap: the IID is elsewhere
		"2002:a00:1:0:200:5efe:c0a8:101":         {"6to4 10.0.0.1", "isatap 192.168.1.1"},
		"2a01:4f8::5efe:808:808":                 {"isatap 8.8.8.8"},
		"2001:0:4136:e378:0:5efe:7f00:1":         {"teredo server 65.54.227.120", "teredo client 128.255.255.254", "isatap 127.0.0.1"},
		"2a01:4f8:1:2:0:5efe:7f00:1%eth0":        {"isatap 127.0.0.1"},
		"64:ff9b::7f00:1":                        nil, // Canonical unwraps it; Embedded sees only what stays IPv6
		"2a01:4f8:1:2:300:5efe:7f00:1":           {"isatap 127.0.0.1"},
		"2a01:4f8:1:2:400:5efe:7f00:1":           nil,
		"2001:0:4136:e378:8000:63bf:3fff:fdd2%x": {"teredo server 65.54.227.120", "teredo client 192.0.2.45"},
	} {
		var emb [3]EmbeddedV4
		var got []string
		for _, e := range emb[:Embedded(Canonical(netip.MustParseAddr(in)), &emb)] {
			got = append(got, e.Kind+" "+e.Addr.String())
		}
		if !slices.Equal(got, want) {
			t.Errorf("Embedded(%s) = %q, want %q", in, got, want)
		}
	}
}

// Every spelling of the host's loopback, of the unspecified address and of
// private or non-global space is denied, whatever IPv4 or IPv6 form it
// takes, and the rule says which.
func TestEveryAddressFormIsJudgedAsWhatItReaches(t *testing.T) {
	r, err := Compile(Policy{HostPorts: []int{5432}}, hostIP, []netip.Prefix{
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2a01:4f8:1:2::/64"),
	})
	if err != nil {
		t.Fatal(err)
	}
	check(t, r, []flowCase{
		// The host itself.
		{"0.0.0.0:8080", nil, false, "unspecified 0.0.0.0/32"},
		{"[::]:8080", nil, false, "unspecified ::/128"},
		{"[::1]:8080", nil, false, "loopback ::1/128"},
		{"[::7f00:1]:8080", nil, false, "loopback 127.0.0.0/8"},
		{"[::127.0.0.1]:8080", nil, false, "loopback 127.0.0.0/8"},
		{"[::ffff:127.0.0.1]:8080", nil, false, "loopback 127.0.0.0/8"},
		{"[::ffff:7f00:1]:8080", nil, false, "loopback 127.0.0.0/8"},
		{"[::ffff:127.1.2.3%eth0]:8080", nil, false, "loopback 127.0.0.0/8"},
		{"[64:ff9b::7f00:1]:8080", nil, false, "loopback 127.0.0.0/8"},
		{"[2002:7f00:1::]:8080", nil, false, "6to4 2002:7f00:1:: carries 127.0.0.1: private: loopback"},
		{"[2001:0:4136:e378:8000:63bf:80ff:fffe]:8080", nil, false, "teredo client 2001:0:4136:e378:8000:63bf:80ff:fffe carries 127.0.0.1: private: loopback"},
		{"[2606:4700::5efe:7f00:1]:8080", nil, false, "isatap 2606:4700::5efe:7f00:1 carries 127.0.0.1: private: loopback"},
		{"[64:ff9b:1::7f00:1]:8080", nil, false, "nat64-local 64:ff9b:1::/48"},
		// Private IPv4, in IPv6 clothing.
		{"[::ffff:10.0.0.1]:80", nil, false, "rfc1918"},
		{"[::a00:1]:80", nil, false, "rfc1918"},
		{"[64:ff9b::a9fe:a9fe]:80", nil, false, "link-local 169.254.0.0/16"}, // the metadata address
		{"[2002:c0a8:101::1]:80", nil, false, "6to4 2002:c0a8:101::1 carries 192.168.1.1: private: rfc1918"},
		{"[2001:0:a00:1:8000:63bf:3fff:fdd2]:80", nil, false, "teredo server 2001:0:a00:1:8000:63bf:3fff:fdd2 carries 10.0.0.1"},
		{"[2606:4700::200:5efe:a00:1]:80", nil, false, "isatap 2606:4700::200:5efe:a00:1 carries 10.0.0.1"},
		{"[::2]:80", nil, false, "this-network"},
		{"[::ffff:0:a00:1]:80", nil, false, "ipv4-translated"},
		// IPv6 that is not global.
		{"[fe80::1%eth0]:80", nil, false, "link-local fe80::/10"},
		{"[fec0::1]:80", nil, false, "site-local fec0::/10"},
		{"[fc00::1]:80", nil, false, "ula fc00::/7"},
		{"[fd12:3456::1]:80", nil, false, "ula fc00::/7"},
		{"[ff02::1]:80", nil, false, "multicast ff00::/8"},
		{"[100::1]:80", nil, false, "discard 100::/64"},
		{"[2001:db8::1]:80", nil, false, "documentation 2001:db8::/32"},
		{"[3fff::1]:80", nil, false, "documentation 3fff::/20"},
		{"[2001:2::1]:80", nil, false, "benchmarking"},
		{"[2001:10::1]:80", nil, false, "orchid"},
		{"[4000::1]:80", nil, false, "outside global unicast"},
		{"[5f00::1]:80", nil, false, "outside global unicast"},
		{"192.0.0.9:80", nil, false, "ietf-protocol"},
		// The host's own LANs, v4 and v6, in any form.
		{"[::ffff:203.0.113.7]:22", nil, false, "host LAN 203.0.113.0/24"},
		{"[2002:cb00:7107::1]:22", nil, false, "carries 203.0.113.7: private: host LAN"},
		{"[2a01:4f8:1:2::5]:22", nil, false, "host LAN 2a01:4f8:1:2::/64"},
		// The host address: exposed TCP ports only, in any spelling, and never UDP.
		{"[::ffff:192.168.127.254]:5432", nil, true, "host port 5432"},
		{"[64:ff9b::c0a8:7ffe]:5432", nil, true, "host port 5432"},
		{"udp:192.168.127.254:5432", nil, false, "host port 5432: only TCP ports are exposed"},
		{"udp:192.168.127.254:53", nil, false, "only TCP"},
		// What is public stays reachable.
		{"[2606:4700::1111]:443", nil, true, "default"},
		{"[::ffff:8.8.8.8]:53", nil, true, "default"},
		{"udp:8.8.8.8:53", nil, true, "default"},
		{"[64:ff9b::808:808]:443", nil, true, "default"},
		{"[2002:808:808::1]:443", nil, true, "default"},
		{"[2001:0:4136:e378:8000:63bf:3fff:fdd2]:443", nil, true, "default"},
	})
}

// No allow entry opens the host itself: not 0.0.0.0/0, not ::/0, not the
// loopback address written out, and not through a tunnel address.
func TestAllowEntriesNeverOpenTheHostItself(t *testing.T) {
	r := rules(t, Policy{Mode: ModeAllowlist, Allow: []string{"0.0.0.0/0", "::/0", "127.0.0.1", "::1", "::ffff:127.0.0.1", "2002::/16"}})
	check(t, r, []flowCase{
		{"127.0.0.1:80", nil, false, "loopback"},
		{"0.0.0.0:80", nil, false, "unspecified"},
		{"[::]:80", nil, false, "unspecified"},
		{"[::1]:80", nil, false, "loopback"},
		{"[::ffff:127.0.0.1]:80", nil, false, "loopback"},
		{"[2002:7f00:1::]:80", nil, false, "carries 127.0.0.1"},
		{"10.1.2.3:80", nil, true, "allow 0.0.0.0/0"}, // private space opens when allowed explicitly
		{"[fd00::1]:80", nil, true, "allow ::/0"},
		{"192.168.127.254:80", nil, false, "not exposed"},
	})
	for _, dst := range []string{"127.0.0.1:80", "[::]:80", "[::ffff:127.0.0.1]:80", "[2002:7f00:1::]:80"} {
		if v := r.CheckFlow(TCP, flow(dst), nil); !v.HostItself() {
			t.Errorf("%s: %+v is not the host itself", dst, v)
		}
	}
	if v := r.CheckFlow(TCP, flow("10.0.0.1:80"), nil); v.HostItself() {
		t.Errorf("10.0.0.1 is the host itself: %+v", v)
	}
}

// An entry written in an IPv6 form is the entry of what it reaches, and a
// deny entry also covers the IPv4 addresses a tunnel address carries.
func TestEntriesAreCanonical(t *testing.T) {
	r := rules(t, Policy{Deny: []string{"::ffff:198.51.100.0/120", "64:ff9b::c000:205"}})
	check(t, r, []flowCase{
		{"198.51.100.7:443", nil, false, "deny 198.51.100.0/24"},
		{"[::ffff:198.51.100.7]:443", nil, false, "deny 198.51.100.0/24"},
		{"[64:ff9b::c633:6407]:443", nil, false, "deny 198.51.100.0/24"},
		{"[2002:c633:6407::1]:443", nil, false, "6to4 2002:c633:6407::1 carries 198.51.100.7: deny 198.51.100.0/24"},
		{"192.0.2.5:443", nil, false, "deny 192.0.2.5/32"},
		{"198.51.101.7:443", nil, true, "default"},
	})
	if _, p, err := ParseEntry("fe80::1%eth0"); err != nil || p != netip.MustParsePrefix("fe80::1/128") {
		t.Errorf("an entry with a zone: %v %v", p, err)
	}
}

func TestBindingsAreCanonical(t *testing.T) {
	b := NewBindings()
	b.Add(netip.MustParseAddr("::ffff:1.2.3.4"), 0, "example.com")
	b.Add(netip.MustParseAddr("64:ff9b::506:708"), 0, "dns64.example") // a DNS64 answer
	for a, want := range map[string]string{
		"1.2.3.4": "example.com", "::ffff:1.2.3.4": "example.com", "64:ff9b::102:304": "example.com", "::102:304": "example.com",
		"5.6.7.8": "dns64.example", "::ffff:5.6.7.8": "dns64.example",
	} {
		if got := b.Names(netip.MustParseAddr(a)); len(got) != 1 || got[0] != want {
			t.Errorf("Names(%s) = %v, want %s", a, got, want)
		}
	}
}

// The commands the 403 page suggests are the ones that change the outcome.
func TestFixSuggestsWhatOpensTheRequest(t *testing.T) {
	hostPort := netip.MustParseAddrPort("192.168.127.254:5432")
	for _, c := range []struct {
		p     Policy
		name  string
		proto Proto
		dst   string
		names []string
		want  string // steps, "; " between; "-" for none
	}{
		{Policy{}, "", TCP, "10.9.9.9:80", nil, "allow 10.9.9.9"},
		{Policy{}, "", TCP, "[::ffff:10.9.9.9]:80", nil, "allow 10.9.9.9"},
		{Policy{}, "", TCP, hostPort.String(), nil, "expose 5432"},
		{Policy{}, "", UDP, hostPort.String(), nil, "-"},
		{Policy{}, "", TCP, "127.0.0.1:80", nil, "-"},
		{Policy{}, "", TCP, "[::]:80", nil, "-"},
		{Policy{}, "", TCP, "[2002:7f00:1::]:80", nil, "-"},
		{Policy{}, "", TCP, "[2002:a00:1::]:80", nil, "allow 10.0.0.1"},
		{Policy{Deny: []string{"*.tracker.io"}}, "x.tracker.io", TCP, "", nil, "remove *.tracker.io"},
		{Policy{Deny: []string{"198.51.100.0/24"}}, "", TCP, "198.51.100.7:443", nil, "remove 198.51.100.0/24"},
		{Policy{Mode: ModeAllowlist, Deny: []string{"Bad.example.com"}}, "bad.example.com", TCP, "", nil, "remove Bad.example.com; allow bad.example.com"},
		{Policy{Mode: ModeAllowlist}, "", TCP, "93.184.216.34:443", nil, "allow 93.184.216.34"},
		{Policy{Mode: ModeAllowlist}, "rebind.example", TCP, "10.0.0.5:80", []string{"rebind.example"}, "allow rebind.example; allow 10.0.0.5"},
		{Policy{Mode: ModeAllowlist, Deny: []string{"10.0.0.0/8"}}, "", TCP, "10.0.0.5:80", nil, "remove 10.0.0.0/8; allow 10.0.0.5"},
	} {
		var dst netip.AddrPort
		if c.dst != "" {
			dst = netip.MustParseAddrPort(c.dst)
		}
		r := rules(t, c.p)
		steps := r.Fix(c.name, c.proto, dst, c.names)
		var got []string
		for _, s := range steps {
			got = append(got, s.Verb+" "+s.Arg)
		}
		if s := strings.Join(got, "; "); s != c.want && !(c.want == "-" && steps == nil) {
			t.Errorf("%+v %s %s: fix %q, want %q", c.p, c.name, c.dst, s, c.want)
			continue
		}
		if steps == nil {
			continue
		}
		// Applied as `cowork policy` applies them, they open the request.
		p := c.p
		for _, s := range steps {
			s.apply(&p)
		}
		r2 := rules(t, p)
		if c.name != "" && !r2.CheckName(c.name).Allow {
			t.Errorf("%+v: after %q the name is still refused", c.p, got)
		}
		if dst.IsValid() && !r2.CheckFlow(c.proto, dst, c.names).Allow {
			t.Errorf("%+v: after %q %s is still denied: %+v", c.p, got, dst, r2.CheckFlow(c.proto, dst, c.names))
		}
	}
}

// The decision is on every flow's path: the common IPv4 cases allocate
// nothing.
func TestCheckFlowDoesNotAllocate(t *testing.T) {
	def := rules(t, Policy{Deny: []string{"*.tracker.example", "198.18.0.0/15"}, HostPorts: []int{5432}})
	list := rules(t, Policy{Mode: ModeAllowlist, Allow: []string{"api.anthropic.com", "*.github.com", "151.101.0.0/16"}})
	names := []string{"codeload.github.com"}
	for _, c := range []struct {
		r     *Rules
		dst   string
		names []string
	}{
		{def, "140.82.112.3:443", names},
		{def, "140.82.112.3:443", nil},
		{def, "10.0.0.1:443", nil},
		{def, "127.0.0.1:443", nil},
		{def, "192.168.127.254:5432", nil},
		{list, "140.82.112.3:443", names},
		{list, "151.101.1.1:443", nil},
	} {
		dst := netip.MustParseAddrPort(c.dst)
		if n := testing.AllocsPerRun(100, func() { c.r.CheckFlow(TCP, dst, c.names) }); n != 0 {
			t.Errorf("CheckFlow(%s, %v): %v allocations", c.dst, c.names, n)
		}
	}
	a := netip.MustParseAddr("140.82.112.3")
	if n := testing.AllocsPerRun(100, func() { Canonical(a) }); n != 0 {
		t.Errorf("Canonical of an IPv4 address: %v allocations", n)
	}
}

func BenchmarkCheckFlow(b *testing.B) {
	lans := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2a01:4f8:1:2::/64")}
	def, _ := Compile(Policy{Deny: []string{"*.tracker.example"}}, hostIP, lans)
	list, _ := Compile(Policy{Mode: ModeAllowlist, Allow: []string{"api.anthropic.com", "*.github.com", "registry.npmjs.org"}, Deny: []string{"*.tracker.example"}}, hostIP, lans)
	names := []string{"codeload.github.com"}
	for _, c := range []struct {
		name  string
		r     *Rules
		dst   string
		names []string
	}{
		{"ipv4-default", def, "140.82.112.3:443", names},
		{"ipv4-allowlist", list, "140.82.112.3:443", names},
		{"ipv4-private", def, "10.1.2.3:443", nil},
		{"ipv6-global", def, "[2606:4700::1111]:443", nil},
		{"ipv6-mapped-loopback", def, "[::ffff:127.0.0.1]:443", nil},
		{"ipv6-6to4-loopback", def, "[2002:7f00:1::]:443", nil},
	} {
		dst := netip.MustParseAddrPort(c.dst)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.r.CheckFlow(TCP, dst, c.names)
			}
		})
	}
}
