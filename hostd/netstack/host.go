package netstack

import (
	"net"
	"net/netip"
)

// HostLANs are the subnets of every address of the host's interfaces: the
// guest must not reach the host's neighbours, nor the host itself through
// one of its addresses. Interfaces that are down count too (their
// addresses may still be the host's), and so does the loopback interface
// (it can carry more than 127.0.0.1: an anycast or service address).
func HostLANs() []netip.Prefix {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if p, err := netip.ParsePrefix(ipn.String()); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}

func netip4(s string) [4]byte { return netip.MustParseAddr(s).As4() }
