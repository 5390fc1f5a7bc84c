//go:build linux

package netstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/procstat"
)

// lineEcho answers what it reads, through a small buffer (io.Copy between
// two sockets would splice through a pipe, two more descriptors a flow
// that the test's fd count would have to tell from the stack's).
func lineEcho(c net.Conn) {
	buf := make([]byte, 512)
	for {
		k, err := c.Read(buf)
		if k > 0 {
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// roundTrip sends a message on c and reads it back.
func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func withLimits(l Limits) func(*Config) {
	return func(c *Config) {
		c.Limits = l
		c.throttleWindow = time.Hour // one window for the whole test: line counts are exact
	}
}

// countLines counts the audit lines match accepts, and the denials they
// stand for (a summary stands for its count).
func (tn *testNet) countLines(t *testing.T, match func(*audit.Record) bool) (lines int, denials int64) {
	t.Helper()
	audit.Stream(t.Context(), tn.auditLog, time.Time{}, false, func(r *audit.Record) error {
		if match(r) {
			lines++
			denials += max(r.Suppressed, 1)
		}
		return nil
	})
	return lines, denials
}

// TestFlowStormIsRefusedBeyondTheLimit: a guest opening far more flows than
// the limit gets the rest refused; hostd's descriptors stay bounded, the
// audit log gets a bounded number of lines, and the network works again
// once the guest lets go.
func TestFlowStormIsRefusedBeyondTheLimit(t *testing.T) {
	const limit, storm = 32, 400
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{MaxFlows: limit}))
	tn.world.serveTCP(t, "198.51.100.10:80", lineEcho)
	tn.world.serveUDPEcho(t, "198.51.100.20:5000")
	before := procstat.Self().OpenFDs

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range limit {
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatalf("flow %d of %d: %v", i+1, limit, err)
		}
		if err := roundTrip(c, "hi"); err != nil {
			t.Fatalf("flow %d: %v", i+1, err)
		}
		held = append(held, c)
	}
	// The storm: to many ports, so that the throttle sees many keys.
	for i := range storm {
		c, err := tn.dialTCP(t, fmt.Sprintf("198.51.100.10:%d", 1000+i))
		if err == nil {
			c.Close()
			t.Fatalf("storm flow %d connected past the limit of %d", i, limit)
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Fatalf("storm flow %d: %v, want refused", i, err)
		}
	}
	// UDP and the gateway's services count too.
	u, _ := tn.guest.DialUDP("198.51.100.20:5000")
	u.Write([]byte("udp past the limit"))
	u.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if k, err := u.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a UDP flow past the limit got an answer (%d bytes)", k)
	}
	u.Close()
	p, err := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err == nil {
		p.SetReadDeadline(time.Now().Add(10 * time.Second))
		if k, err := p.Read(make([]byte, 64)); err == nil {
			t.Fatalf("the proxy served a connection past the limit (%d bytes)", k)
		}
		p.Close()
	}

	fds := procstat.Self().OpenFDs - before
	// Each held flow: the stack's host socket and the test world's end.
	if fds > 2*limit+16 {
		t.Errorf("%d more descriptors during a storm of %d flows; want at most %d", fds, storm, 2*limit+16)
	}
	st := tn.FlowStats()
	if st.Active != limit || st.MaxFlows != limit || st.Refused < storm+2 || st.FirstRefused.IsZero() || st.LastRefused.Before(st.FirstRefused) {
		t.Errorf("stats %+v: want %d active, at least %d refused", st, limit, storm+2)
	}
	isLimit := func(r *audit.Record) bool { return r.Verdict == audit.Deny && strings.HasPrefix(r.Rule, "limit:") }
	if lines, _ := tn.countLines(t, isLimit); lines == 0 || lines > audit.DefaultThrottleBurst {
		t.Errorf("%d audit lines for %d refusals, want 1 to %d", lines, storm, audit.DefaultThrottleBurst)
	}
	tn.lim.throttle.Flush(time.Now().Add(2 * time.Hour))
	// Summaries: one per destination that had a line, one for the rest.
	lines, denials := tn.countLines(t, func(r *audit.Record) bool { return isLimit(r) || r.Rule == audit.RuleThrottled })
	if lines > 2*audit.DefaultThrottleBurst+3 || denials != st.Refused {
		t.Errorf("after the summaries: %d lines standing for %d refusals, want at most %d lines for %d", lines, denials, 2*audit.DefaultThrottleBurst+3, st.Refused)
	}

	// Letting go gives the slots back, and new flows work.
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitFor(t, "the flows to end", func() bool { return tn.FlowStats().Active == 0 })
	c, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatalf("after the storm: %v", err)
	}
	defer c.Close()
	if err := roundTrip(c, "still here"); err != nil {
		t.Fatal(err)
	}
}

// TestOpeningFlowsAreBounded: connections stuck being dialled (a black
// hole) take at most MaxPending slots; one more is refused at once.
func TestOpeningFlowsAreBounded(t *testing.T) {
	const pending = 4
	hole := make(chan struct{})
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{MaxFlows: 64, MaxPending: pending}), func(c *Config) {
		dial := c.DialContext
		c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == "198.51.100.66:80" {
				select {
				case <-hole:
				case <-ctx.Done():
				}
				return nil, &net.OpError{Op: "dial", Net: network, Err: context.DeadlineExceeded}
			}
			return dial(ctx, network, addr)
		}
	})
	tn.world.serveTCP(t, "198.51.100.10:80", lineEcho)
	errs := make(chan error, pending)
	for range pending {
		go func() {
			c, err := tn.guest.DialTCP(context.Background(), "198.51.100.66:80")
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	waitFor(t, "the dials to be pending", func() bool { return tn.FlowStats().Pending == pending })
	if c, err := tn.dialTCP(t, "198.51.100.10:80"); err == nil {
		c.Close()
		t.Fatal("a connection opened past the pending limit")
	}
	if st := tn.FlowStats(); st.Refused != 1 {
		t.Fatalf("stats %+v: want 1 refused", st)
	}
	tn.waitRecord(t, func(r *audit.Record) bool {
		return r.Verdict == audit.Deny && r.Dst == "198.51.100.10:80" && strings.Contains(r.Rule, "opening at once")
	})
	close(hole)
	for range pending {
		if err := <-errs; err == nil {
			t.Fatal("a black-holed destination connected")
		}
	}
	waitFor(t, "the slots to come back", func() bool { st := tn.FlowStats(); return st.Pending == 0 && st.Active == 0 })
	c, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatalf("after the black hole: %v", err)
	}
	c.Close()
}

// fakeClock is a settable clock for the idle timeout.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestIdleFlowsAreClosed: a flow silent both ways for the idle timeout
// is closed, both its ends; one that carried a byte since is not. The
// same holds for a connection to the gateway's proxy.
func TestIdleFlowsAreClosed(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Unix(1_800_000_000, 0).UnixNano())
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{IdleTimeout: time.Minute}), func(c *Config) { c.clock = clock.now })
	worldEnds := make(chan net.Conn, 4)
	tn.world.serveTCP(t, "198.51.100.10:80", func(c net.Conn) {
		worldEnds <- c
		lineEcho(c)
	})
	open := func() (guest, world net.Conn) {
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatal(err)
		}
		return c, <-worldEnds
	}
	busy, _ := open()
	quiet, quietWorld := open()
	proxy, err := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	waitFor(t, "three watched connections", func() bool { return tn.lim.idle.len() == 3 })

	clock.advance(40 * time.Second)
	if err := roundTrip(busy, "still talking"); err != nil {
		t.Fatal(err)
	}
	clock.advance(30 * time.Second) // the quiet ones: 70 s; the busy one: 30 s
	tn.lim.idle.reap(clock.now())

	for name, c := range map[string]net.Conn{"the quiet flow": quiet, "the quiet proxy connection": proxy, "the quiet flow's host side": quietWorld} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if k, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
			t.Errorf("%s after 70 s idle: read %d bytes, %v; want it closed", name, k, err)
		}
	}
	if err := roundTrip(busy, "and on"); err != nil {
		t.Fatalf("the busy flow: %v", err)
	}
	waitFor(t, "the quiet flow's slot", func() bool { return tn.FlowStats().Active == 1 })
	if tn.lim.idle.len() != 1 {
		t.Errorf("%d connections still watched, want 1", tn.lim.idle.len())
	}
}

// TestHalfClosedFlowsAreClosedSooner: a flow the guest closed its way
// (its program exited) to a server that neither answers nor closes is
// closed after halfClosedIdle, long before the idle timeout; an open flow
// as quiet is not.
func TestHalfClosedFlowsAreClosedSooner(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Unix(1_800_000_000, 0).UnixNano())
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{IdleTimeout: time.Hour}), func(c *Config) { c.clock = clock.now })
	worldEnds := make(chan net.Conn, 2)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	tn.world.serveTCP(t, "198.51.100.10:80", func(c net.Conn) {
		worldEnds <- c
		io.Copy(io.Discard, c) // reads to the end, then neither answers nor closes
		<-done
	})
	open, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	openWorld := <-worldEnds
	half, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	halfWorld := <-worldEnds
	half.(interface{ CloseWrite() error }).CloseWrite()
	waitFor(t, "the half-close to pass", func() bool {
		tn.lim.idle.mu.Lock()
		defer tn.lim.idle.mu.Unlock()
		for tc := range tn.lim.idle.conns {
			if tc.halfClosed.Load() {
				return true
			}
		}
		return false
	})
	clock.advance(halfClosedIdle + time.Second)
	tn.lim.idle.reap(clock.now())
	halfWorld.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := halfWorld.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the half-closed flow's host side after %s: %v, want it closed", halfClosedIdle, err)
	}
	openWorld.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := openWorld.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("the open flow's host side: %v, want it still open", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestDeniedTCPFlowsAreThrottled: a guest hammering a denied destination
// gets one line, and a summary of the rest.
func TestDeniedTCPFlowsAreThrottled(t *testing.T) {
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{}))
	const tries = 50
	for range tries {
		if c, err := tn.dialTCP(t, "10.1.2.3:443"); err == nil {
			c.Close()
			t.Fatal("a private address connected")
		}
	}
	isIt := func(r *audit.Record) bool { return r.Dst == "10.1.2.3:443" }
	if lines, _ := tn.countLines(t, isIt); lines != 1 {
		t.Fatalf("%d lines for %d denied attempts within the window, want 1", lines, tries)
	}
	tn.lim.throttle.Flush(time.Now().Add(2 * time.Hour))
	if lines, denials := tn.countLines(t, isIt); lines != 2 || denials != tries {
		t.Fatalf("%d lines standing for %d denials, want 2 for %d", lines, denials, tries)
	}
	if st := tn.Stats(); st.Blocked != tries {
		t.Fatalf("stats %+v: want %d blocked", st, tries)
	}
}

func TestLimitsFitTheOpenFileLimit(t *testing.T) {
	for _, c := range []struct {
		in     Limits
		nofile uint64
		flows  int
		note   bool
	}{
		{Limits{}, 20000, DefaultMaxFlows, false},
		{Limits{}, 0, DefaultMaxFlows, false},
		{Limits{}, 1 << 62, DefaultMaxFlows, false}, // unlimited
		{Limits{MaxFlows: 50000}, 20000, 20000 - fdReserve, true},
		{Limits{}, 1024, 1024 - fdReserve, true},
		{Limits{}, 256, minFlows, true},
	} {
		got, note := c.in.withDefaults(c.nofile)
		if got.MaxFlows != c.flows || (note != "") != c.note || got.MaxPending > got.MaxFlows || got.IdleTimeout != DefaultIdleTimeout {
			t.Errorf("%+v with %d files: %+v %q, want %d flows", c.in, c.nofile, got, note, c.flows)
		}
	}
}

// TestHandshakeTheGuestNeverFinishes: a SYN whose SYN-ACK the guest never
// answers holds its host connection and slots for handshakeTimeout, not
// for the two minutes gVisor goes on retransmitting the SYN-ACK.
func TestHandshakeTheGuestNeverFinishes(t *testing.T) {
	defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
	handshakeTimeout = 200 * time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	var d net.Dialer
	n, err := New(Config{
		GuestMAC: GuestMAC("test"), LANs: []netip.Prefix{}, Resolvers: []string{"127.0.0.1:1"},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, l.Addr().String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nic, err := n.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	fd := int(nic.Fd())
	synAcks := make(chan struct{}, 100)
	stop := make(chan struct{})
	defer close(stop)
	go answerARP(fd, GuestMAC("test"), synAcks, stop)
	if _, err := unix.Write(fd, synFrame(GuestMAC("test"), 40000, netip.MustParseAddrPort("198.51.100.50:80"))); err != nil {
		t.Fatal(err)
	}
	var world net.Conn
	select {
	case world = <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the flow was never dialled")
	}
	defer world.Close()
	world.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := world.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the host side of a half-open flow: %v, want it closed", err)
	}
	waitFor(t, "the slots to come back", func() bool { st := n.FlowStats(); return st.Active == 0 && st.Pending == 0 })
	select {
	case <-synAcks:
	default:
		t.Fatal("the stack never sent the SYN-ACK")
	}
}

// answerARP plays a guest that answers ARP for its address and ignores
// everything else, noting the SYN-ACKs it got, until stop.
func answerARP(fd int, mac net.HardwareAddr, synAcks chan<- struct{}, stop <-chan struct{}) {
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	buf := make([]byte, 2048)
	for {
		select {
		case <-stop:
			return
		default:
		}
		k, err := unix.Read(fd, buf)
		if err != nil {
			continue
		}
		eth := header.Ethernet(buf[:k])
		switch eth.Type() {
		case header.IPv4ProtocolNumber:
			ip := header.IPv4(buf[header.EthernetMinimumSize:k])
			if ip.TransportProtocol() == header.TCPProtocolNumber {
				if f := header.TCP(ip.Payload()).Flags(); f.Contains(header.TCPFlagSyn | header.TCPFlagAck) {
					select {
					case synAcks <- struct{}{}:
					default:
					}
				}
			}
		case header.ARPProtocolNumber:
			req := header.ARP(buf[header.EthernetMinimumSize:k])
			if !req.IsValid() || req.Op() != header.ARPRequest || netip.AddrFrom4([4]byte(req.ProtocolAddressTarget())) != netip.MustParseAddr(GuestIP) {
				continue
			}
			b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
			header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac), DstAddr: tcpip.LinkAddress(req.HardwareAddressSender()), Type: header.ARPProtocolNumber})
			reply := header.ARP(b[header.EthernetMinimumSize:])
			reply.SetIPv4OverEthernet()
			reply.SetOp(header.ARPReply)
			copy(reply.HardwareAddressSender(), mac)
			copy(reply.ProtocolAddressSender(), req.ProtocolAddressTarget())
			copy(reply.HardwareAddressTarget(), req.HardwareAddressSender())
			copy(reply.ProtocolAddressTarget(), req.ProtocolAddressSender())
			unix.Write(fd, b)
		}
	}
}

// synFrame is a guest's TCP SYN to dst, as it comes on the NIC.
func synFrame(mac net.HardwareAddr, srcPort uint16, dst netip.AddrPort) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+header.TCPMinimumSize)
	gw, _ := net.ParseMAC(gatewayMAC)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac), DstAddr: tcpip.LinkAddress(gw), Type: header.IPv4ProtocolNumber})
	src, dstAddr := tcpip.AddrFrom4(netip4(GuestIP)), tcpip.AddrFrom4(dst.Addr().As4())
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b) - header.EthernetMinimumSize), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dstAddr})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcpHdr := header.TCP(ip.Payload())
	tcpHdr.Encode(&header.TCPFields{SrcPort: srcPort, DstPort: dst.Port(), SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dstAddr, uint16(len(tcpHdr)))
	tcpHdr.SetChecksum(^tcpHdr.CalculateChecksum(xsum))
	return b
}

// blockingDNS answers nothing until released.
type nopWriter struct {
	dns.ResponseWriter
	got chan *dns.Msg
}

func (w nopWriter) WriteMsg(m *dns.Msg) error { w.got <- m; return nil }

// TestDNSQueriesInFlightAreBounded: queries beyond maxDNSInFlight being
// answered at once get SERVFAIL without being forwarded.
func TestDNSQueriesInFlightAreBounded(t *testing.T) {
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{}))
	release := make(chan struct{})
	var answered atomic.Int32
	h := tn.limitDNS(dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		<-release
		answered.Add(1)
		m := new(dns.Msg)
		w.WriteMsg(m.SetReply(q))
	}))
	got := make(chan *dns.Msg, maxDNSInFlight+1)
	q := new(dns.Msg)
	q.SetQuestion("slow.test.", dns.TypeA)
	for range maxDNSInFlight {
		go h.ServeDNS(nopWriter{got: got}, q)
	}
	waitFor(t, "the queries to be in flight", func() bool { return len(tn.lim.dns) == maxDNSInFlight })
	h.ServeDNS(nopWriter{got: got}, q)
	if m := <-got; m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("a query past the bound: %v, want SERVFAIL", m)
	}
	close(release)
	for range maxDNSInFlight {
		if m := <-got; m.Rcode != dns.RcodeSuccess {
			t.Fatalf("a query within the bound: %v", m)
		}
	}
	if answered.Load() != maxDNSInFlight {
		t.Fatalf("%d forwarded, want %d", answered.Load(), maxDNSInFlight)
	}
	tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && strings.HasPrefix(r.Rule, "limit:") })
}

// emfileListener fails its first Accepts as a process out of descriptors
// does, then accepts for real.
type emfileListener struct {
	net.Listener
	fail atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fail.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestPublishedPortOutlastsEMFILE: a published port's accept loop used to
// return at its first failure and leave the port deaf.
func TestPublishedPortOutlastsEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &emfileListener{Listener: inner}
	l.fail.Store(5)
	n := &Stack{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan struct{})
	go func() {
		n.servePublished(l, func(c net.Conn) { io.WriteString(c, "served\n"); c.Close() })
		close(done)
	}()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "served\n" {
		t.Fatalf("after 5 failed accepts: %q %v; the port stopped serving", got, err)
	}
	inner.Close()
	<-done
}
