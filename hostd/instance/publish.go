package instance

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// MaxPublish bounds the guest ports an instance publishes at once, its
// config's and `cowork port publish`'s together (hostd/netstack's
// MaxPorts): each is a host listener, and all are in every status.
const MaxPublish = 64

// Publish makes a guest TCP or UDP port reachable on the host, like
// docker's -p.
type Publish struct {
	HostIP    string `json:"host_ip"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	Proto     string `json:"proto,omitempty"` // "udp", or empty for TCP
}

// ParsePublish reads [HOSTIP:]HOSTPORT:GUESTPORT[/udp|/tcp]; the host
// address defaults to 127.0.0.1, so nothing is exposed beyond this machine
// unless asked.
func ParsePublish(s string) (Publish, error) {
	p := Publish{HostIP: "127.0.0.1"}
	spec := s
	if rest, ok := strings.CutSuffix(spec, "/udp"); ok {
		spec, p.Proto = rest, "udp"
	} else {
		spec = strings.TrimSuffix(spec, "/tcp")
	}
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 2:
	case 3:
		p.HostIP, parts = parts[0], parts[1:]
		if net.ParseIP(p.HostIP) == nil {
			return p, fmt.Errorf("--publish %q: %q is not an IP address", s, p.HostIP)
		}
	default:
		return p, fmt.Errorf("--publish %q: want [HOSTIP:]HOSTPORT:GUESTPORT[/udp], e.g. 8080:80 or 5353:53/udp", s)
	}
	var err1, err2 error
	p.HostPort, err1 = strconv.Atoi(parts[0])
	p.GuestPort, err2 = strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || p.HostPort < 1 || p.HostPort > 65535 || p.GuestPort < 1 || p.GuestPort > 65535 {
		return p, fmt.Errorf("--publish %q: ports are 1 to 65535", s)
	}
	return p, nil
}

// HostAddr is where the port listens on the host.
func (p Publish) HostAddr() string { return net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort)) }

func (p Publish) String() string {
	if p.Proto == "udp" {
		return fmt.Sprintf("%s->%d/udp", p.HostAddr(), p.GuestPort)
	}
	return fmt.Sprintf("%s->%d", p.HostAddr(), p.GuestPort)
}
