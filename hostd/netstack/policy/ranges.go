package policy

import (
	"net/netip"
	"sync"
)

// special is a range the policy treats apart, with the rule that names it.
type special struct {
	prefix netip.Prefix
	rule   string
}

// ranges parses the list of prefix, name pairs. The tables are built on
// first use: every CLI command links this package, and only a policy
// decision needs them.
func ranges(kind string, list ...string) []special {
	out := make([]special, 0, len(list)/2)
	for i := 0; i < len(list); i += 2 {
		p := netip.MustParsePrefix(list[i])
		out = append(out, special{p, kind + list[i+1] + " " + p.String()})
	}
	return out
}

// hostSelf are the addresses that reach the host itself whatever the
// policy says: its loopback, and the unspecified addresses (on Linux and
// macOS a connection to 0.0.0.0 or :: goes to the local host). No allow
// entry opens them; the host's loopback is reachable only on exposed
// ports, at host.cowork.internal.
var hostSelf = sync.OnceValue(func() []special {
	return ranges("private: ",
		"0.0.0.0/32", "unspecified",
		"127.0.0.0/8", "loopback",
		"::/128", "unspecified",
		"::1/128", "loopback",
	)
})

// builtin are the ranges denied unless an allow entry covers the address
// explicitly: private, link-local (with the metadata address), multicast,
// reserved, and the IPv6 ranges that are not globally reachable (IANA's
// special-purpose registries). The IPv4 documentation ranges are left out
// on purpose: nothing routes them, and the tests' fake internet lives
// there.
var builtin = sync.OnceValue(func() []special {
	return ranges("private: ",
		"0.0.0.0/8", "this-network",
		"10.0.0.0/8", "rfc1918",
		"172.16.0.0/12", "rfc1918",
		"192.168.0.0/16", "rfc1918",
		"100.64.0.0/10", "cgnat",
		"169.254.0.0/16", "link-local", // 169.254.169.254 included
		"168.63.129.16/32", "azure-platform", // WireServer: Azure's metadata and agent endpoint
		"192.0.0.0/24", "ietf-protocol", // DS-Lite, NAT64 discovery, dummy
		"224.0.0.0/4", "multicast",
		"240.0.0.0/4", "reserved", // 255.255.255.255 included
		"fe80::/10", "link-local",
		"fec0::/10", "site-local",
		"fc00::/7", "ula",
		"ff00::/8", "multicast",
		"100::/64", "discard",
		"64:ff9b:1::/48", "nat64-local",
		"::ffff:0:0:0/96", "ipv4-translated",
		"2001:db8::/32", "documentation",
		"3fff::/20", "documentation",
		"2001:2::/48", "benchmarking",
		"2001:10::/28", "orchid",
		"2001:20::/28", "orchid-v2",
	)
})

// Public says whether a (canonical) is an address of the internet: none
// of the host's own, the private, link-local and reserved ranges an allow
// entry may open (builtin), nor an IPv6 address outside global unicast.
// The egress proxy a cluster's sandboxes share reaches public addresses
// only, whatever its policy allows: there, a private range is the
// cluster's own pods, services and API server.
func Public(a netip.Addr) bool {
	if _, ok := match(hostSelf(), a); ok {
		return false
	}
	if _, ok := match(builtin(), a); ok {
		return false
	}
	return !a.Is6() || globalUnicast.Contains(a)
}

// globalUnicast is where every routable IPv6 address lives; an IPv6
// address outside it (after Canonical) names nothing on the internet.
var globalUnicast = netip.MustParsePrefix("2000::/3")

const ruleNotGlobal = "private: reserved, outside global unicast 2000::/3"

func match(list []special, a netip.Addr) (string, bool) {
	for i := range list {
		if list[i].prefix.Contains(a) {
			return list[i].rule, true
		}
	}
	return "", false
}
