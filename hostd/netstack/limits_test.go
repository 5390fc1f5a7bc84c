//go:build linux

package netstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

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

// nopWriter hands the answer it is given to got.
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
