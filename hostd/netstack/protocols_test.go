//go:build linux

package netstack

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// udpHostService is a UDP echo server on the host's 127.0.0.1 that counts
// the datagrams it gets.
func udpHostService(t *testing.T) (int, *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var got atomic.Int32
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(1)
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port, &got
}

// sendUDP sends a few datagrams from the guest and reports whether any
// answer came back.
func (tn *testNet) sendUDP(t *testing.T, addr string) bool {
	t.Helper()
	c, err := tn.guest.DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		c.Write([]byte("hello?"))
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = c.Read(make([]byte, 100))
	return err == nil
}

// Exposing a host TCP port does not expose the UDP port of that number.
func TestExposedHostPortIsTCPOnly(t *testing.T) {
	port, got := udpHostService(t)
	tn := newTestNet(t, policy.Policy{HostPorts: []int{port}})
	target := HostIP + ":" + strconv.Itoa(port)
	if tn.sendUDP(t, target) {
		t.Fatal("a UDP host port answered because the TCP port of its number is exposed")
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindUDP && r.Dst == target })
	if r.Verdict != audit.Deny || !strings.Contains(r.Rule, "only TCP ports are exposed") {
		t.Fatalf("record %+v", r)
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the host's UDP service got %d datagrams", n)
	}
}

// With an upstream proxy, no guest datagram leaves the host: UDP cannot
// go through the proxy, so it is denied, with a line. DNS is still
// answered (by the host's resolvers, as for the host's own programs).
func TestUDPDeniedWhenAnUpstreamProxyIsSet(t *testing.T) {
	up := &fakeUpstream{}
	tn := newTestNet(t, policy.Policy{}, func(c *Config) { c.Upstream = up.serve(t, worldOf(c), false) })
	tn.world.serveUDPEcho(t, "198.51.100.20:5000")
	if tn.sendUDP(t, "198.51.100.20:5000") {
		t.Fatal("UDP went around the upstream proxy")
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindUDP && r.Dst == "198.51.100.20:5000" })
	if r.Verdict != audit.Deny || r.Rule != "upstream proxy: UDP cannot go through it" {
		t.Fatalf("record %+v", r)
	}
	if m, err := tn.lookup(t, "udp.allowed.test"); err != nil || len(m.Answer) != 1 {
		t.Fatalf("DNS with an upstream proxy: %v %v", m, err)
	}
}

// Packets of other IP protocols (SCTP, GRE, experimental numbers) go
// nowhere and are audited, once per destination and protocol however often
// they are sent.
func TestOtherIPProtocolsAreDroppedAndAudited(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	gw, _ := net.ParseMAC(gatewayMAC)
	guest := netip.MustParseAddr(GuestIP)
	for _, p := range []struct {
		proto uint8
		dst   string
	}{{132, "198.51.100.10"}, {47, "8.8.8.8"}, {253, GatewayIP}, {4, "10.0.0.1"}} {
		for range 20 {
			if err := tn.guest.SendIPv4(gw, p.proto, guest, netip.MustParseAddr(p.dst), []byte("payload")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A ping after them, down the same path, marks that they were seen.
	tn.ping(GatewayIP)
	tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindICMP })
	lines := map[string]int{}
	audit.Stream(t.Context(), tn.auditLog, time.Time{}, false, func(r *audit.Record) error {
		if r.Kind == audit.KindIP {
			lines[r.Dst+"/"+strconv.Itoa(r.Proto)]++
			if r.Verdict != audit.Deny || !strings.Contains(r.Rule, "is not forwarded") {
				t.Errorf("record %+v", r)
			}
		}
		return nil
	})
	for _, k := range []string{"198.51.100.10/132", "8.8.8.8/47", GatewayIP + "/253", "10.0.0.1/4"} {
		if lines[k] != 1 {
			t.Errorf("%s: %d lines for 20 packets, want 1 (all: %v)", k, lines[k], lines)
		}
	}
}

// The audit lines for dropped packets are bounded however many
// destinations a guest sprays, and what was held back is counted.
func TestDroppedPacketLinesAreBounded(t *testing.T) {
	var l rawLimiter
	now := time.Unix(1000, 0)
	lines := 0
	for i := range 10000 {
		if _, ok := l.allow(rawKey{netip.AddrFrom4([4]byte{8, 8, byte(i >> 8), byte(i)}), 253}, now); ok {
			lines++
		}
	}
	if lines != rawPerWindow {
		t.Fatalf("%d lines for 10000 destinations in one window, want %d", lines, rawPerWindow)
	}
	held, ok := l.allow(rawKey{netip.MustParseAddr("9.9.9.9"), 47}, now.Add(rawWindow))
	if !ok || held != 10000-rawPerWindow {
		t.Fatalf("next window: ok=%v held=%d", ok, held)
	}
	// One destination and protocol: one line per rawQuiet.
	k := rawKey{netip.MustParseAddr("1.1.1.1"), 132}
	later := now.Add(time.Hour)
	if _, ok := l.allow(k, later); !ok {
		t.Fatal("the first packet got no line")
	}
	if _, ok := l.allow(k, later.Add(rawQuiet/2)); ok {
		t.Fatal("a repeat within the quiet time got a line")
	}
	if _, ok := l.allow(k, later.Add(rawQuiet)); !ok {
		t.Fatal("a repeat after the quiet time got no line")
	}
	if len(l.last) > rawKeys {
		t.Fatalf("the limiter remembers %d keys", len(l.last))
	}
}

// A query with several questions is refused, and audited.
func TestMultiQuestionQueryIsDeniedAndAudited(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"blocked.test"}})
	conn, err := tn.guest.DialUDP(GatewayIP + ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion("allowed.test.", dns.TypeA)
	q.Question = append(q.Question, dns.Question{Name: "blocked.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	c := &dns.Conn{Conn: conn}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	m, err := c.ReadMsg()
	if err != nil || m.Rcode != dns.RcodeFormatError || len(m.Answer) != 0 {
		t.Fatalf("answer %v %v", m, err)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Verdict == audit.Deny })
	if r.Rule != "dns: 2 questions in one query; one is allowed" || r.Name != "allowed.test" || r.RCode != "FORMERR" {
		t.Fatalf("record %+v", r)
	}
}
