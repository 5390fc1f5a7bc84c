//go:build linux

package netstack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// guestServe listens on the fake guest's port and echoes.
func (tn *testNet) guestServe(t *testing.T, port uint16) {
	t.Helper()
	addr := netip.MustParseAddr(GuestIP).As4()
	l, err := gonet.ListenTCP(tn.guest.S, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(addr), Port: port}, ipv4.ProtocolNumber)
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
			go echo(c)
		}
	}()
}

// echoesAt says whether a line sent to addr on the host comes back.
func echoesAt(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping\n")
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		return fmt.Errorf("read %q: %v", b, err)
	}
	return nil
}

// A port published while the stack runs reaches the guest's service at
// once; taken back, its listener and every connection through it close,
// and both are in the audit log; neither counts as a guest flow.
func TestPublishWhileRunning(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.guestServe(t, 8000)
	p, err := tn.Publish("127.0.0.1:0", 8000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.HostAddr, "127.0.0.1:") || strings.HasSuffix(p.HostAddr, ":0") || p.GuestPort != 8000 || p.Config {
		t.Fatalf("published %+v", p)
	}
	if err := echoesAt(p.HostAddr); err != nil {
		t.Fatalf("through the published port: %v", err)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindPublish })
	if r.Dst != p.HostAddr || r.GuestPort != 8000 || r.Verdict != audit.Allow {
		t.Errorf("publish record %+v", r)
	}
	if _, err := tn.Publish(p.HostAddr, 8001); err == nil {
		t.Error("a host address published twice")
	}
	if got := tn.Ports(); len(got) != 1 || got[0] != p {
		t.Errorf("ports %+v", got)
	}

	// A connection open through it is cut when it goes.
	live, err := net.Dial("tcp", p.HostAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	io.WriteString(live, "x")
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	live.Read(make([]byte, 1))
	if _, err := tn.Unpublish("8000"); err != nil { // by guest port
		t.Fatal(err)
	}
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := live.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("a connection through the removed port lives on: %v", err)
	}
	if err := echoesAt(p.HostAddr); err == nil {
		t.Error("the removed port still answers")
	}
	tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindUnpublish && r.Dst == p.HostAddr })
	time.Sleep(300 * time.Millisecond) // the closed listener's serve loop ends meanwhile, and is no failure
	if len(tn.Ports()) != 0 || len(tn.ServeFailures()) != 0 {
		t.Errorf("after unpublish: ports %v, failures %v", tn.Ports(), tn.ServeFailures())
	}
	if st := tn.audit.Stats(); st.Flows != 0 {
		t.Errorf("publishing counted %d guest flows", st.Flows)
	}
	if _, err := tn.Unpublish("8000"); !errors.Is(err, ErrNoSuchPort) {
		t.Errorf("unpublish twice: %v", err)
	}
}

func TestPublishRefusals(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	for _, port := range []int{0, -1, 65536} {
		if _, err := tn.Publish("127.0.0.1:0", port); err == nil {
			t.Errorf("guest port %d published", port)
		}
	}
	a, _ := tn.Publish("127.0.0.1:0", 9000)
	b, _ := tn.Publish("127.0.0.1:0", 9000)
	if _, err := tn.Unpublish("9000"); err == nil || !strings.Contains(err.Error(), "names 2 published ports") {
		t.Errorf("an ambiguous unpublish: %v", err)
	}
	_, bPort, _ := net.SplitHostPort(b.HostAddr)
	if got, err := tn.Unpublish(bPort); err != nil || got != b {
		t.Errorf("unpublish by host port: %+v %v", got, err)
	}
	if got, err := tn.Unpublish(a.HostAddr); err != nil || got != a {
		t.Errorf("unpublish by host address: %+v %v", got, err)
	}
	// The bound: MaxPorts at once.
	for i := range MaxPorts {
		if _, err := tn.Publish("127.0.0.1:0", 10000+i); err != nil {
			t.Fatalf("port %d: %v", i, err)
		}
	}
	if _, err := tn.Publish("127.0.0.1:0", 20000); err == nil || !strings.Contains(err.Error(), strconv.Itoa(MaxPorts)+" ports are published") {
		t.Errorf("port %d: %v", MaxPorts+1, err)
	}
}

// The config's ports are published as the stack starts, marked so.
func TestConfigPortsArePublished(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	tn := newTestNet(t, policy.Policy{}, func(c *Config) { c.Forwards = []Forward{{HostAddr: addr, GuestPort: 8080}} })
	tn.guestServe(t, 8080)
	if got := tn.Ports(); len(got) != 1 || got[0] != (Port{HostAddr: addr, GuestPort: 8080, Config: true}) {
		t.Fatalf("ports %+v", got)
	}
	if err := echoesAt(addr); err != nil {
		t.Error(err)
	}
}

// A published port's listener closed on purpose ends its loop quietly;
// closed otherwise, the loop is a failure status shows.
func TestAClosedPortIsAFailureOnlyWhenNotRemoved(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	for _, removed := range []bool{true, false} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tn.servePublished(l, func(c net.Conn) { c.Close() }, func() bool { return removed })
		l.Close()
		service := "published port " + l.Addr().String()
		deadline := time.Now().Add(2 * time.Second)
		failed := false
		for time.Now().Before(deadline) && !failed {
			for _, f := range tn.ServeFailures() {
				failed = failed || f.Service == service
			}
			time.Sleep(20 * time.Millisecond)
		}
		if failed == removed {
			t.Errorf("removed %v: failure recorded %v", removed, failed)
		}
	}
}

// An unspecified IPv4 address listens on IPv4 alone, says so, and is
// taken back by the address the user gave, however it is written.
func TestPublishOnEveryIPv4Address(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	p, err := tn.Publish("0.0.0.0:0", 8000)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(p.HostAddr)
	if !strings.HasPrefix(p.HostAddr, "0.0.0.0:") {
		t.Errorf("bound as %s", p.HostAddr)
	}
	if c, err := net.DialTimeout("tcp6", "[::1]:"+port, time.Second); err == nil {
		c.Close()
		t.Errorf("0.0.0.0 listens on IPv6 too")
	}
	if _, err := tn.Unpublish("[::ffff:0.0.0.0]:" + port); err != nil {
		t.Errorf("unpublish by another spelling: %v", err)
	}
}

// When the network stops, its ports close, each with its unpublish
// record, and none is published after.
func TestClosedNetworkPublishesNothing(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	p, _ := tn.Publish("127.0.0.1:0", 8000)
	tn.closePorts()
	tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindUnpublish && r.Dst == p.HostAddr })
	if _, err := tn.Publish("127.0.0.1:0", 8001); err == nil {
		t.Error("published after the network stopped")
	}
}

// One port takes so many connections at once; the next is closed.
func TestAPortTakesBoundedConnections(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.guestServe(t, 8000)
	p, _ := tn.Publish("127.0.0.1:0", 8000)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range maxPortConns {
		c, err := net.Dial("tcp", p.HostAddr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// A round trip: the connection is counted in before the next.
		io.WriteString(c, "x")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	c, err := net.Dial("tcp", p.HostAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection %d was taken", maxPortConns+1)
	}
}

// guestServeUDP answers each datagram on the fake guest's UDP port with
// "re:" and the datagram.
func (tn *testNet) guestServeUDP(t *testing.T, port uint16) {
	t.Helper()
	addr := netip.MustParseAddr(GuestIP).As4()
	c, err := gonet.DialUDP(tn.guest.S, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(addr), Port: port}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(b)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte("re:"), b[:n]...), from)
		}
	}()
}

// udpAsk sends msg to addr from a socket of its own and returns the answer.
func udpAsk(addr, msg string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	b := make([]byte, 2048)
	n, err := c.Read(b)
	return string(b[:n]), err
}

// A UDP port answers each host peer from the guest's service; a TCP port
// of the same number is another port; rm with /udp takes the UDP one back
// alone, after which it no longer answers; both ends are audited as UDP.
func TestPublishUDP(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.guestServeUDP(t, 5353)
	tn.guestServe(t, 5353)
	// A free UDP port's TCP twin may be another process's: take one
	// whose twin is free (published further down).
	var u Port
	for try := 0; ; try++ {
		var err error
		if u, err = tn.PublishUDP("127.0.0.1:0", 5353); err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp4", u.HostAddr)
		if err == nil {
			l.Close()
			break
		}
		if try == 20 {
			t.Fatalf("no UDP port with a free TCP twin: %v", err)
		}
		if _, err := tn.Unpublish(u.HostAddr); err != nil {
			t.Fatal(err)
		}
	}
	if u.Proto != UDP || u.GuestPort != 5353 || strings.HasSuffix(u.HostAddr, ":0") || u.String() != u.HostAddr+"->5353/udp" {
		t.Fatalf("published %+v (%s)", u, u)
	}
	for _, msg := range []string{"one", "two"} { // two peers
		if got, err := udpAsk(u.HostAddr, msg); err != nil || got != "re:"+msg {
			t.Fatalf("through the UDP port: %q, %v", got, err)
		}
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindPublish })
	if r.Dst != u.HostAddr || r.Proto != 17 || r.GuestPort != 5353 {
		t.Errorf("publish record %+v", r)
	}
	tcp, err := tn.Publish(u.HostAddr, 5353) // the same number, TCP
	if err != nil {
		t.Fatalf("TCP beside UDP on %s: %v", u.HostAddr, err)
	}
	if _, err := tn.Unpublish(u.HostAddr); err == nil || !strings.Contains(err.Error(), "with /udp or /tcp") {
		t.Errorf("rm of an address both use: %v", err)
	}
	if got, err := tn.Unpublish("5353/udp"); err != nil || got.Proto != UDP {
		t.Fatalf("rm 5353/udp: %+v %v", got, err)
	}
	if _, err := udpAsk(u.HostAddr, "three"); err == nil {
		t.Error("the UDP port answers after its removal")
	}
	if err := echoesAt(tcp.HostAddr); err != nil {
		t.Errorf("the TCP port went with the UDP one: %v", err)
	}
	if _, err := tn.Unpublish("5353/udp"); !errors.Is(err, ErrNoSuchPort) {
		t.Errorf("a second rm 5353/udp: %v", err)
	}
	if ports := tn.Ports(); len(ports) != 1 || ports[0].Proto != "" {
		t.Errorf("ports left: %+v", ports)
	}
}

// Host peers beyond maxUDPPeers get nothing until a flow ends; those
// within keep being answered.
func TestPublishUDPBoundsItsPeers(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.guestServeUDP(t, 7000)
	u, err := tn.PublishUDP("127.0.0.1:0", 7000)
	if err != nil {
		t.Fatal(err)
	}
	var keep []net.Conn
	for i := range maxUDPPeers + 5 {
		c, err := net.Dial("udp", u.HostAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "peer %d", i)
		keep = append(keep, c)
	}
	answered := 0
	b := make([]byte, 64)
	for _, c := range keep {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(b); err == nil {
			answered++
		}
	}
	if answered != maxUDPPeers {
		t.Errorf("%d of %d peers answered, want the first %d", answered, len(keep), maxUDPPeers)
	}
}

// A UDP port's dialer: a flow per new peer while the port has fewer than
// maxUDPPeers and all ports fewer than maxUDPPeersTotal; a closed flow
// gives its place back (once, however often it is closed); none once the
// port is removed.
func TestBoundedDial(t *testing.T) {
	var total atomic.Int64
	removed := false
	dialer := func() func() (net.Conn, error) {
		return boundedDial(&udpPeers{port: &atomic.Int64{}, total: &total}, func() bool { return removed }, func() (net.Conn, error) {
			a, _ := net.Pipe()
			return a, nil
		})
	}
	one := dialer()
	var conns []net.Conn
	for range maxUDPPeers {
		c, err := one()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if _, err := one(); err == nil {
		t.Fatal("a peer past the port's bound got a flow")
	}
	conns[0].Close()
	conns[0].Close()
	if _, err := one(); err != nil {
		t.Fatalf("a closed flow gave no place back: %v", err)
	}
	if _, err := one(); err == nil {
		t.Fatal("a second close gave a second place back")
	}
	// Other ports share the total.
	for total.Load() < maxUDPPeersTotal {
		if _, err := dialer()(); err != nil {
			t.Fatalf("at %d peers in all: %v", total.Load(), err)
		}
	}
	if _, err := dialer()(); err == nil || !strings.Contains(err.Error(), "published UDP ports") {
		t.Errorf("a peer past the total: %v", err)
	}
	removed = true
	conns[1].Close()
	if _, err := one(); err == nil {
		t.Error("a removed port's dialer made a flow")
	}
}

// The follower's take-back never takes a user's port.
func TestUnpublishAutoLeavesTheUsersPorts(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	user, err := tn.Publish("127.0.0.1:0", 8000)
	if err != nil {
		t.Fatal(err)
	}
	if tn.UnpublishAuto(user.HostAddr, "") {
		t.Error("UnpublishAuto took a user's port")
	}
	auto, err := tn.PublishAuto("", "127.0.0.1:0", 8001)
	if err != nil || !auto.Auto {
		t.Fatalf("%+v %v", auto, err)
	}
	if tn.UnpublishAuto(auto.HostAddr, UDP) || !tn.UnpublishAuto(auto.HostAddr, "") {
		t.Error("UnpublishAuto did not take its own TCP port back (alone)")
	}
	if ports := tn.Ports(); len(ports) != 1 || ports[0].HostAddr != user.HostAddr {
		t.Errorf("ports left: %+v", ports)
	}
}
