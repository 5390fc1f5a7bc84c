//go:build linux

package netstack

import (
	"context"
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

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/netstacktest"
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
	// Names that lead to the host's loopback, alone or among public
	// addresses (answers are A or AAAA by the address's family).
	"loopback.test.": "127.0.0.1 ::1",
	"mixed.test.":    "127.0.0.1 198.51.100.40",
	"mixed6.test.":   "198.51.100.40 ::ffff:127.0.0.1 ::1",
}

// worlds finds a test's world from its config (by its resolver address).
var worlds sync.Map

func worldOf(c *Config) *world {
	w, _ := worlds.Load(c.Resolvers[0])
	return w.(*world)
}

// world is the fake internet: a resolver, and servers behind fake addresses.
type world struct {
	resolver string // host:port of the fake DNS server
	mu       sync.Mutex
	tcp      map[string]string // fake ip:port -> real 127.0.0.1:port
	udp      map[string]string
	names    map[string]string // a test's own answers, before fakeDNS
}

// answer is what the fake resolver says of a name.
func (w *world) answer(name string) (string, bool) {
	w.mu.Lock()
	v, ok := w.names[name]
	w.mu.Unlock()
	if !ok {
		v, ok = fakeDNS[name]
	}
	return v, ok
}

// setName makes the fake resolver answer name (FQDN) with addrs.
func (w *world) setName(name, addrs string) {
	w.mu.Lock()
	w.names[name] = addrs
	w.mu.Unlock()
}

func newWorld(t *testing.T) *world {
	w := &world{tcp: map[string]string{}, udp: map[string]string{}, names: map[string]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		for name != "" {
			v, ok := w.answer(name)
			if !ok {
				m.Rcode = dns.RcodeNameError
				break
			}
			if target, isCNAME := strings.CutPrefix(v, "CNAME "); isCNAME {
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target})
				name = target
				continue
			}
			for _, f := range strings.Fields(v) {
				a := netip.MustParseAddr(f)
				switch qt := q.Question[0].Qtype; {
				case qt == dns.TypeA && a.Is4():
					m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IP(a.AsSlice())})
				case qt == dns.TypeAAAA && a.Is6():
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.IP(a.AsSlice())})
				}
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

// dial is the stack's dialer: fake addresses go to their servers; every
// address that reaches this machine itself (127.0.0.1 for exposed host
// ports, and whatever else a stack that let it through would reach:
// ::1, ::, 0.0.0.0, ::ffff:127.0.0.1) is dialled for real, as the host's
// dialer would.
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	real, ok := w.tcp[addr]
	if strings.HasPrefix(network, "udp") {
		real, ok = w.udp[addr]
	}
	w.mu.Unlock()
	if !ok {
		ap, err := netip.ParseAddrPort(addr)
		if a := ap.Addr().Unmap(); err != nil || !a.IsLoopback() && !a.IsUnspecified() {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
		}
		real = addr
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
	guest    *netstacktest.Guest
	world    *world
	auditLog string
}

func newTestNet(t *testing.T, p policy.Policy, tweak ...func(*Config)) *testNet {
	t.Helper()
	w := newWorld(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "network.jsonl")
	al, err := audit.Open(logPath, audit.Options{Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")})
	if err != nil {
		t.Fatal(err)
	}
	worlds.Store(w.resolver, w)
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
	g, err := netstacktest.New(nic, cfg.GuestMAC, netip.MustParseAddr(GuestIP), gatewayAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return &testNet{Stack: n, guest: g, world: w, auditLog: logPath}
}

// dialTCP connects from the guest.
func (tn *testNet) dialTCP(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	return tn.dialGuest(addr)
}

func (tn *testNet) dialGuest(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return tn.guest.DialTCP(ctx, addr)
}

// lookup asks the gateway's DNS from the guest.
func (tn *testNet) lookup(t *testing.T, name string) (*dns.Msg, error) {
	t.Helper()
	conn, err := tn.guest.DialUDP(GatewayIP + ":53")
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

func (tn *testNet) ping(dst string) error {
	return tn.guest.Ping(netip.MustParseAddr(dst), 2*time.Second)
}
