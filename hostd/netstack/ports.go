package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containers/gvisor-tap-vsock/pkg/services/forwarder"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/splice"
)

// MaxPorts bounds the guest ports published at once: each is a host
// listener, and their list is in every status. The instance's config
// allows as many (instance.MaxPublish).
const MaxPorts = 64

// maxPortConns bounds the connections through one published port: each
// holds a goroutine and an endpoint of the stack, and a port published on
// 0.0.0.0 takes them from anyone on the network.
const maxPortConns = 256

// maxUDPPeers bounds the host peers of one published UDP port, and
// maxUDPPeersTotal those of all of them: each has a flow into the guest
// and a 64 KiB buffer for the guest's answers (16 MiB at most in all).
const (
	maxUDPPeers      = 64
	maxUDPPeersTotal = 256
)

// Port is a guest TCP or UDP port reachable on the host.
type Port struct {
	HostAddr  string `json:"host_addr"` // as bound: a port 0 asked for is the one the host gave
	GuestPort int    `json:"guest_port"`
	// Proto is "udp" for a UDP port, empty for TCP.
	Proto string `json:"proto,omitempty"`
	// Config says it comes from the instance's config (init --publish)
	// and comes back at each start; the others last while the VM runs.
	Config bool `json:"config,omitempty"`
	// Auto says hostd published it because the guest listens on it
	// (PublishAuto); it goes when the guest stops listening.
	Auto bool `json:"auto,omitempty"`
}

func (p Port) String() string {
	return fmt.Sprintf("%s->%d%s", p.HostAddr, p.GuestPort, protoSuffix(p.Proto))
}

// UDP is Port.Proto of a UDP port.
const UDP = "udp"

// protoSuffix is "/udp" for UDP, nothing for TCP: how ports are named.
func protoSuffix(proto string) string {
	if proto == UDP {
		return "/udp"
	}
	return ""
}

// ErrNoSuchPort is an Unpublish of a port that is not published.
var ErrNoSuchPort = errors.New("no such published port")

// ports is the published ports, in the order they were published.
type ports struct {
	mu     sync.Mutex
	list   []*published
	closed bool // the stack closed: nothing is published again
}

// published is one port: its host listener (or UDP proxy) and the
// connections through it, which Unpublish cuts.
type published struct {
	Port
	l       net.Listener
	udp     *forwarder.UDPProxy
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	removed bool
}

// publishConfig publishes the config's ports, as the stack starts.
func (n *Stack) publishConfig() error {
	for _, f := range n.cfg.Forwards {
		if _, err := n.publishAs(f.Proto, f.HostAddr, Port{GuestPort: f.GuestPort, Config: true}); err != nil {
			return err
		}
	}
	return nil
}

// Publish makes the guest's TCP port guestPort reachable at hostAddr
// (host:port; port 0 takes a free one) while the stack runs, and writes
// it to the audit log. Connections to it are the host's into the guest,
// not the guest's egress, so the policy does not apply to them.
func (n *Stack) Publish(hostAddr string, guestPort int) (Port, error) {
	return n.publishAs("", hostAddr, Port{GuestPort: guestPort})
}

// PublishUDP makes the guest's UDP port guestPort reachable at hostAddr,
// as Publish does for TCP: each host peer gets a flow of its own into the
// guest (at most maxUDPPeers at once), which ends after 90 s without a
// datagram either way.
func (n *Stack) PublishUDP(hostAddr string, guestPort int) (Port, error) {
	return n.publishAs(UDP, hostAddr, Port{GuestPort: guestPort})
}

// PublishAuto publishes, as Publish or PublishUDP (proto UDP) does, a
// port the guest listens on, marked Auto.
func (n *Stack) PublishAuto(proto, hostAddr string, guestPort int) (Port, error) {
	return n.publishAs(proto, hostAddr, Port{GuestPort: guestPort, Auto: true})
}

// publishAs publishes hostAddr to the guest port of as, which says where
// the port comes from (Config, Auto).
func (n *Stack) publishAs(proto, hostAddr string, as Port) (Port, error) {
	guestPort := as.GuestPort
	if proto != "" && proto != UDP {
		return Port{}, fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
	if guestPort < 1 || guestPort > 65535 {
		return Port{}, fmt.Errorf("guest port %d: want 1-65535", guestPort)
	}
	if !n.auditBack() {
		// A port the guest's listening made (Auto) as much as one asked
		// for: a way in opened off the record is none.
		return Port{}, errors.New(auditDownRule)
	}
	n.ports.mu.Lock()
	defer n.ports.mu.Unlock()
	if n.ports.closed {
		return Port{}, errors.New("the guest network has stopped")
	}
	if len(n.ports.list) >= MaxPorts {
		return Port{}, fmt.Errorf("%d ports are published, the most an instance has: remove one first", MaxPorts)
	}
	// tcp4 or tcp6 as the address is: "tcp" on 0.0.0.0 would listen on
	// every IPv6 address too, and say it listens on [::].
	family := "4"
	if host, _, err := net.SplitHostPort(hostAddr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() && !ip.Is4In6() {
			family = "6"
		}
	}
	guest := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(netip4(GuestIP)), Port: uint16(guestPort)}
	listen := n.publishTCP
	if proto == UDP {
		listen = n.publishUDP
	}
	p, err := listen(family, hostAddr, guest, as)
	if err != nil {
		return Port{}, err
	}
	if !n.auditPort(audit.KindPublish, p.Port) {
		p.remove() // its line failed: it opens no way in off the record
		return Port{}, errors.New(auditDownRule)
	}
	n.ports.list = append(n.ports.list, p)
	return p.Port, nil
}

// publishTCP listens on hostAddr (IP family "4" or "6") and joins each
// connection to the guest's port.
func (n *Stack) publishTCP(family, hostAddr string, guest tcpip.FullAddress, as Port) (*published, error) {
	l, err := net.Listen("tcp"+family, hostAddr)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", hostAddr, err)
	}
	as.HostAddr = l.Addr().String()
	p := &published{Port: as, l: l, conns: map[net.Conn]struct{}{}}
	handle := func(c net.Conn) {
		if !p.add(c) {
			c.Close()
			return
		}
		defer p.drop(c)
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		g, err := gonet.DialContextTCP(ctx, n.s, guest, ipv4.ProtocolNumber)
		cancel()
		if err != nil {
			c.Close()
			return
		}
		// No audit line per connection: traffic the host started into a
		// published port is not the guest's egress.
		splice.Join(c, g, splice.Options{})
	}
	n.servePublished(l, handle, p.isRemoved)
	return p, nil
}

// publishUDP binds hostAddr for UDP and proxies each host peer's
// datagrams to guest through a flow of its own (gvisor-tap-vsock's UDP
// proxy), at most maxUDPPeers peers at once: the next one's datagrams
// are dropped until a flow ends.
func (n *Stack) publishUDP(family, hostAddr string, guest tcpip.FullAddress, as Port) (*published, error) {
	pc, err := net.ListenPacket("udp"+family, hostAddr)
	if err != nil {
		return nil, fmt.Errorf("publish %s/udp: %w", hostAddr, err)
	}
	as.HostAddr, as.Proto = pc.LocalAddr().String(), UDP
	p := &published{Port: as}
	dial := boundedDial(&udpPeers{port: &atomic.Int64{}, total: &n.udpPeers}, p.isRemoved, func() (net.Conn, error) {
		return gonet.DialUDP(n.s, nil, &guest, ipv4.ProtocolNumber)
	})
	proxy, err := forwarder.NewUDPProxy(pc, dial)
	if err != nil {
		pc.Close()
		return nil, err
	}
	p.udp = proxy
	go proxy.Run()
	return p, nil
}

// udpPeers counts a UDP port's peers, and every port's.
type udpPeers struct{ port, total *atomic.Int64 }

// boundedDial is the UDP proxy's dialer for one port: a flow for a new
// peer while the port has fewer than maxUDPPeers and all ports fewer than
// maxUDPPeersTotal, and never once the port is removed (the proxy may
// take a datagram read before its removal); a flow's Close gives its
// place back.
func boundedDial(peers *udpPeers, removed func() bool, dial func() (net.Conn, error)) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		if removed() {
			return nil, errors.New("the port was taken back")
		}
		if peers.port.Add(1) > maxUDPPeers {
			peers.port.Add(-1)
			return nil, fmt.Errorf("%d peers use this published UDP port; a datagram of one more is dropped", maxUDPPeers)
		}
		if peers.total.Add(1) > maxUDPPeersTotal {
			peers.total.Add(-1)
			peers.port.Add(-1)
			return nil, fmt.Errorf("%d peers use the published UDP ports; a datagram of one more is dropped", maxUDPPeersTotal)
		}
		c, err := dial()
		if err != nil {
			peers.port.Add(-1)
			peers.total.Add(-1)
			return nil, err
		}
		return &peerConn{Conn: c, done: func() { peers.port.Add(-1); peers.total.Add(-1) }}, nil
	}
}

// peerConn is a UDP peer's flow into the guest, which counts itself out
// once closed.
type peerConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *peerConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

// UnpublishAuto takes back the port at hostAddr with proto if, and only
// if, it is one PublishAuto made: the follower never takes a user's.
func (n *Stack) UnpublishAuto(hostAddr, proto string) bool {
	n.ports.mu.Lock()
	defer n.ports.mu.Unlock()
	i := slices.IndexFunc(n.ports.list, func(p *published) bool {
		return p.Auto && p.Proto == proto && sameAddr(p.HostAddr, hostAddr)
	})
	if i < 0 {
		return false
	}
	n.removeAt(i)
	return true
}

// removeAt takes back the i-th port; n.ports.mu is held, so that the log
// says unpublish before a publish of the same address can say publish.
func (n *Stack) removeAt(i int) Port {
	p := n.ports.list[i]
	n.ports.list = slices.Delete(n.ports.list, i, i+1)
	p.remove()
	if p.l != nil {
		n.loops.forget("published port " + p.HostAddr)
	}
	n.auditPort(audit.KindUnpublish, p.Port)
	return p.Port
}

// Unpublish stops the port published at hostAddr (host:port, or the
// port alone) or, when which is a guest port published once, that one:
// its listener closes and its connections are cut. A "/udp" or "/tcp"
// after which names the protocol (TCP and UDP ports may share numbers).
func (n *Stack) Unpublish(which string) (Port, error) {
	n.ports.mu.Lock()
	defer n.ports.mu.Unlock()
	proto, anyProto := "", true
	if w, ok := strings.CutSuffix(which, "/udp"); ok {
		which, proto, anyProto = w, UDP, false
	} else if w, ok := strings.CutSuffix(which, "/tcp"); ok {
		which, anyProto = w, false
	}
	ofProto := func(p *published) bool { return anyProto || p.Proto == proto }
	match := func(by func(p *published) bool) []int {
		var out []int
		for j, p := range n.ports.list {
			if ofProto(p) && by(p) {
				out = append(out, j)
			}
		}
		return out
	}
	matches := match(func(p *published) bool { return sameAddr(p.HostAddr, which) })
	if len(matches) == 0 {
		matches = match(func(p *published) bool {
			_, port, _ := net.SplitHostPort(p.HostAddr)
			return port == which || strconv.Itoa(p.GuestPort) == which
		})
	}
	switch {
	case len(matches) == 0:
		return Port{}, fmt.Errorf("%s%s: %w", which, protoSuffix(proto), ErrNoSuchPort)
	case len(matches) > 1:
		return Port{}, fmt.Errorf("%s names %d published ports: name one by its host address, with /udp or /tcp", which, len(matches))
	}
	return n.removeAt(matches[0]), nil
}

// sameAddr says whether two host:port addresses are the same, however
// their IPs are written (::ffff:127.0.0.1, 0:0::1).
func sameAddr(a, b string) bool {
	pa, errA := netip.ParseAddrPort(a)
	pb, errB := netip.ParseAddrPort(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.Addr().Unmap() == pb.Addr().Unmap() && pa.Port() == pb.Port()
}

// Ports lists the published ports.
func (n *Stack) Ports() []Port {
	n.ports.mu.Lock()
	defer n.ports.mu.Unlock()
	out := make([]Port, len(n.ports.list))
	for i, p := range n.ports.list {
		out[i] = p.Port
	}
	return out
}

// closePorts closes every port, as the stack closes, each with its
// unpublish record: the log pairs every publish with its end.
func (n *Stack) closePorts() {
	n.ports.mu.Lock()
	defer n.ports.mu.Unlock()
	n.ports.closed = true
	for _, p := range n.ports.list {
		p.remove()
		n.auditPort(audit.KindUnpublish, p.Port)
	}
	n.ports.list = nil
}

// auditPort writes a port's publish or unpublish line, and says whether
// it was written.
func (n *Stack) auditPort(kind string, p Port) bool {
	if n.audit == nil {
		return true
	}
	proto := 6 // TCP's IP protocol number
	if p.Proto == UDP {
		proto = 17
	}
	// Through write: a line that fails counts toward the gap, and takes
	// the audit for down.
	return n.written(&audit.Record{Kind: kind, Verdict: audit.Allow, Dst: p.HostAddr, GuestPort: p.GuestPort, Proto: proto})
}

// add counts a TCP connection in, unless the port was removed meanwhile or
// has as many as it takes.
func (p *published) add(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed || len(p.conns) >= maxPortConns {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *published) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *published) isRemoved() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.removed
}

// remove closes the listener and cuts the connections through it.
func (p *published) remove() {
	p.mu.Lock()
	p.removed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	if p.udp != nil {
		p.udp.Close() // its listener and every peer's flow
		return
	}
	p.l.Close()
	for c := range conns {
		c.Close()
	}
}
