package netstack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/sirupsen/logrus"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// The fake internet the tests' stack reaches: names the fake resolver
// knows, and public-looking addresses that the dialer sends to local servers.
var fakeDNS = map[string]string{
	"allowed.test.":      "198.51.100.10",
	"other.test.":        "198.51.100.11",
	"rebind.test.":       "10.0.0.5", // a public name answering with a private address
	"api.allowed.test.":  "198.51.100.12",
	"blocked.test.":      "198.51.100.13",
	"sub.wild.test.":     "198.51.100.14",
	"cname.test.":        "CNAME allowed.test.",
	"udp.allowed.test.":  "198.51.100.20",
	"proxied.test.":      "198.51.100.30",
	"proxied-deny.test.": "198.51.100.31",
}

// world is the fake internet: a resolver, and servers behind fake addresses.
type world struct {
	resolver string // host:port of the fake DNS server
	mu       sync.Mutex
	tcp      map[string]string // fake ip:port -> real 127.0.0.1:port
	udp      map[string]string
}

func newWorld(t *testing.T) *world {
	w := &world{tcp: map[string]string{}, udp: map[string]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		for name != "" {
			v, ok := fakeDNS[name]
			if !ok {
				m.Rcode = dns.RcodeNameError
				break
			}
			if target, isCNAME := strings.CutPrefix(v, "CNAME "); isCNAME {
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target})
				name = target
				continue
			}
			if q.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(v)})
			}
			break
		}
		_ = rw.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	w.resolver = pc.LocalAddr().String()
	return w
}

// serveTCP puts a handler behind fake address addr.
func (w *world) serveTCP(t *testing.T, addr string, handle func(net.Conn)) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	w.mu.Lock()
	w.tcp[addr] = l.Addr().String()
	w.mu.Unlock()
}

// serveUDPEcho puts a UDP echo server behind fake address addr.
func (w *world) serveUDPEcho(t *testing.T, addr string) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	w.mu.Lock()
	w.udp[addr] = pc.LocalAddr().String()
	w.mu.Unlock()
}

// dial is the stack's dialer: fake addresses go to their servers; the
// host's loopback (for exposed host ports) is dialled for real.
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	real, ok := w.tcp[addr]
	if strings.HasPrefix(network, "udp") {
		real, ok = w.udp[addr]
	}
	w.mu.Unlock()
	if !ok {
		if strings.HasPrefix(addr, "127.0.0.1:") {
			real = addr
		} else {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (w *world) netResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", w.resolver)
	}}
}

// testNet is our stack with a fake guest attached: a second gVisor stack
// on the other end of the frame socketpair, at the guest's address.
type testNet struct {
	*Stack
	guest    *stack.Stack
	world    *world
	auditLog string
}

func newTestNet(t *testing.T, p policy.Policy, tweak ...func(*Config)) *testNet {
	t.Helper()
	w := newWorld(t)
	logPath := filepath.Join(t.TempDir(), "network.jsonl")
	al, err := audit.Open(logPath, audit.DefaultMaxSize, audit.DefaultKeep)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		GuestMAC:    GuestMAC("test"),
		Policy:      p,
		LANs:        []netip.Prefix{},
		Resolvers:   []string{w.resolver},
		Audit:       al,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		DialContext: w.dial,
		Resolver:    w.netResolver(),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); n.Close(); al.Close() })
	nic, err := n.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &testNet{Stack: n, guest: guestStack(t, nic), world: w, auditLog: logPath}
}

// guestStack is a gVisor stack on the VM's end of the socketpair, set up as
// the guest would be after DHCP.
func guestStack(t *testing.T, nic *os.File) *stack.Stack {
	t.Helper()
	fd, err := syscallDup(int(nic.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	nic.Close()
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: MTU, EthernetHeader: true, Address: tcpip.LinkAddress(GuestMAC("test")), PacketDispatchMode: fdbased.RecvMMsg})
	if err != nil {
		t.Fatal(err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	t.Cleanup(s.Close)
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatal(err)
	}
	s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(netip4(GuestIP)), PrefixLen: 24}}, stack.AddressProperties{})
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{}), tcpip.MaskFromBytes([]byte{0, 0, 0, 0}))
	s.SetRouteTable([]tcpip.Route{{Destination: sub, Gateway: tcpip.AddrFrom4(netip4(GatewayIP)), NIC: 1}})
	return s
}

// dialTCP connects from the guest.
func (tn *testNet) dialTCP(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	return tn.dialGuest(addr)
}

func (tn *testNet) dialGuest(addr string) (net.Conn, error) {
	ap := netip.MustParseAddrPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, tn.guest, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		return nil, err // not a typed nil
	}
	return c, nil
}

func TestMain(m *testing.M) {
	logrus.SetOutput(io.Discard) // gvisor-tap-vsock's switch complains at every teardown
	os.Exit(m.Run())
}

// lookup asks the gateway's DNS from the guest.
func (tn *testNet) lookup(t *testing.T, name string) (*dns.Msg, error) {
	t.Helper()
	conn, err := gonet.DialUDP(tn.guest, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(netip4(GatewayIP)), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Conn{Conn: conn}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMsg(q); err != nil {
		return nil, err
	}
	return c.ReadMsg()
}

// records reads the audit log, waiting until match finds what it wants.
func (tn *testNet) waitRecord(t *testing.T, match func(*audit.Record) bool) *audit.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var found *audit.Record
		audit.Stream(context.Background(), tn.auditLog, time.Time{}, false, func(r *audit.Record) error {
			if match(r) {
				found = r
			}
			return nil
		})
		if found != nil {
			return found
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(tn.auditLog)
	t.Fatalf("no matching audit record; the log:\n%s", b)
	return nil
}

// ping sends one echo request from the guest and waits for the reply.
func (tn *testNet) ping(dst string) error {
	var wq waiter.Queue
	ep, terr := tn.guest.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return errors.New(terr.String())
	}
	defer ep.Close()
	if terr := ep.Connect(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(netip4(dst))}); terr != nil {
		return errors.New(terr.String())
	}
	req := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+4))
	req.SetType(header.ICMPv4Echo)
	copy(req.Payload(), "ping")
	var r bytes.Reader
	r.Reset(req)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{}); terr != nil {
		return errors.New(terr.String())
	}
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	deadline := time.After(2 * time.Second)
	for {
		var buf bytes.Buffer
		if _, terr := ep.Read(&buf, tcpip.ReadOptions{}); terr == nil {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return errors.New("no echo reply")
		}
	}
}
