package netstack

import (
	"net"
	"net/netip"
)

// HostLANs are the subnets of the host's own interfaces (loopback aside):
// the guest must not reach the host's neighbours, nor the host itself
// through one of its addresses.
func HostLANs() []netip.Prefix {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
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
