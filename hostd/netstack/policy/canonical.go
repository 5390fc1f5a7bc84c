package policy

import "net/netip"

// Canonical is the one form of an address that every decision judges and
// every dialer dials: the direct forwarders, the proxy (HTTP and CONNECT),
// the DNS bindings and the policy's own entries all go through it, so no
// spelling of an address can be judged as one thing and reach another.
//
//   - the zone is dropped (fe80::1%eth0 is fe80::1);
//   - an IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address: a dual
//     stack socket connects to it over IPv4;
//   - an IPv4-compatible address (::a.b.c.d, deprecated; ::7f00:1 is
//     127.0.0.1) is the IPv4 address: a host with an automatic sit tunnel
//     sends it there. :: and ::1 stay as they are (unspecified, loopback);
//   - a NAT64 address of the well-known prefix (64:ff9b::a.b.c.d) is the
//     IPv4 address: any NAT64 gateway on the host's path delivers it there.
//
// Tunnel addresses (6to4, Teredo, ISATAP) stay IPv6, since that is what is
// dialled; CheckFlow also judges the IPv4 addresses they carry (Embedded).
// An IPv4 address is returned as it is, without allocating: that is nearly
// every flow.
func Canonical(a netip.Addr) netip.Addr {
	if a.Is4() || !a.IsValid() {
		return a
	}
	a = a.WithZone("")
	if a.Is4In6() {
		return a.Unmap()
	}
	b := a.As16()
	if b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 0 && b[8] == 0 && b[9] == 0 && b[10] == 0 && b[11] == 0 {
		// ::a.b.c.d, but not :: and ::1.
		if b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1 {
			return a
		}
		return v4(b[12:])
	}
	if nat64.Contains(a) {
		return v4(b[12:])
	}
	return a
}

// CanonicalPort is Canonical for an address and port.
func CanonicalPort(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4() {
		return ap
	}
	return netip.AddrPortFrom(Canonical(ap.Addr()), ap.Port())
}

// canonicalPrefix puts a policy entry in the canonical form: an entry
// written as ::ffff:10.0.0.0/104 is the IPv4 prefix 10.0.0.0/8.
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4() {
		return p
	}
	c := Canonical(a)
	if c.Is4() {
		if p.Bits() < 96 {
			return p // wider than what embeds one IPv4 prefix: judged as written
		}
		return netip.PrefixFrom(c, p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(c, p.Bits()).Masked()
}

var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	teredo     = netip.MustParsePrefix("2001::/32")
)

func v4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]}) }

// Tunnel kinds, for Embedded.
const (
	Tunnel6to4         = "6to4"
	TunnelTeredoServer = "teredo server"
	TunnelTeredoClient = "teredo client"
	TunnelISATAP       = "isatap"
	TunnelNAT64Local   = "nat64 local-use"
)

// EmbeddedV4 is an IPv4 address an IPv6 address carries, and how.
type EmbeddedV4 struct {
	Addr netip.Addr
	Kind string
}

// Embedded lists the IPv4 addresses a (canonical) IPv6 address carries and
// a host on its path may send packets to: the 6to4 router (2002:AABB:CCDD::),
// the Teredo server and the de-obfuscated Teredo client (2001:0:SSSS:SSSS:
// ...:~CCCC:~CCCC), an ISATAP interface identifier (::0:5efe:a.b.c.d, with
// or without the universal bit) and the two places a local-use NAT64 prefix
// (64:ff9b:1::/48) can put one (RFC 6052: /48 and /96). It fills out and
// returns how many it found, so that it allocates nothing.
func Embedded(a netip.Addr, out *[3]EmbeddedV4) int {
	if !a.Is6() || a.Is4In6() {
		return 0
	}
	b := a.As16()
	n := 0
	add := func(addr netip.Addr, kind string) {
		if n < len(out) {
			out[n] = EmbeddedV4{addr, kind}
			n++
		}
	}
	switch {
	case sixToFour.Contains(a):
		add(v4(b[2:6]), Tunnel6to4)
	case teredo.Contains(a):
		add(v4(b[4:8]), TunnelTeredoServer)
		add(netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), TunnelTeredoClient)
	case nat64Local.Contains(a):
		add(netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]}), TunnelNAT64Local) // /48: u octet (8) skipped
		add(v4(b[12:16]), TunnelNAT64Local)                                      // /96
	}
	if b[8]&^0x03 == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe {
		add(v4(b[12:16]), TunnelISATAP)
	}
	return n
}
