//go:build linux

package netstack

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// slowAgent is an agent slower than the world: it answers after delay,
// and finds a socket only while the client's exchange that ran when it
// was asked still waits for its answer (a client that has its answer
// closes its socket or exits, and the guest's kernel lists it no more).
// found keeps what it found.
type slowAgent struct {
	delay time.Duration
	// exchange counts the starts and ends of exchanges: odd while one
	// runs.
	exchange atomic.Int64
	mu       sync.Mutex
	found    []agentcall.Socket
}

func (a *slowAgent) source() OwnerSource {
	honest := portOwners(nil)
	return func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		during := a.exchange.Load()
		select {
		case <-time.After(a.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if during%2 == 0 || a.exchange.Load() != during {
			return nil, nil
		}
		a.mu.Lock()
		a.found = append(a.found, socks...)
		a.mu.Unlock()
		return honest(ctx, socks)
	}
}

// while runs a client's exchange, as the guest's kernel sees it: its
// socket is there until the exchange returns. Then it lets the agent's
// calls asked during it end, so that none is answered during the next.
func (a *slowAgent) while(exchange func()) {
	a.exchange.Add(1)
	exchange()
	a.exchange.Add(1)
	time.Sleep(2 * a.delay)
}

func (a *slowAgent) foundUDP(peer string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.found {
		if s.Proto == UDP && s.Peer == peer {
			return true
		}
	}
	return false
}

// Every first answer the guest gets for a flow waits for the flow's
// owner, so that a client that leaves as soon as it has its answer is
// still named: a world that answers at once (a TCP echo, a web server
// through the proxy and through a CONNECT tunnel, a UDP echo), a DNS
// answer, and a world that refuses the connection (directly, and the
// proxy's 502 both ways). The agent here is
// slower than each of them and finds no socket once its client has its
// answer: without the wait, no record would name an owner.
func TestAnswersWaitForTheirOwner(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	agent := &slowAgent{delay: 100 * time.Millisecond}
	tn.SetOwners(agent.source())
	tn.world.serveTCP(t, "198.51.100.10:80", echo)
	tn.world.serveUDPEcho(t, "198.51.100.20:5000")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	defer tlsSrv.Close()
	tn.world.mu.Lock()
	tn.world.tcp["198.51.100.30:80"] = strings.TrimPrefix(srv.URL, "http://")
	tn.world.tcp["198.51.100.30:443"] = strings.TrimPrefix(tlsSrv.URL, "https://")
	tn.world.mu.Unlock()

	agent.while(func() {
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatal(err)
		}
	})
	agent.while(func() {
		if c, err := tn.dialTCP(t, "198.51.100.99:80"); err == nil {
			c.Close()
			t.Fatal("a world that refuses answered")
		}
	})
	agent.while(func() {
		if _, err := tn.lookup(t, "allowed.test"); err != nil {
			t.Fatal(err)
		}
	})
	tn.world.setName("refusing.test.", "198.51.100.99")
	for _, u := range []string{"http://proxied.test/", "https://proxied.test/", "http://refusing.test/", "https://refusing.test/"} {
		client := tn.proxyClient()
		agent.while(func() {
			resp, err := client.Get(u)
			if err != nil {
				if strings.HasPrefix(u, "https://refusing") {
					return // the proxy's 502 to CONNECT
				}
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			client.CloseIdleConnections() // a tunnel's line is written when it closes
		})
	}
	agent.while(func() {
		c, err := tn.guest.DialUDP("198.51.100.20:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c, "ping"); err != nil {
			t.Fatal(err)
		}
	})

	for _, w := range []struct {
		what  string
		match func(*audit.Record) bool
	}{
		{"tcp", func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.10:80" }},
		{"refused by the world", func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.99:80" }},
		{"dns", func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Name == "allowed.test" }},
		{"http", func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied.test" }},
		{"connect", func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Name == "proxied.test" }},
		{"http refused by the world", func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "refusing.test" }},
		{"connect refused by the world", func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Name == "refusing.test" }},
	} {
		r := tn.waitRecord(t, w.match)
		if r.Owner == nil || r.GuestPort == 0 || r.Owner.PID != r.GuestPort || r.Verdict != audit.Allow {
			t.Errorf("%s: owner %+v of a record from guest port %d, verdict %s", w.what, r.Owner, r.GuestPort, r.Verdict)
		}
	}
	// A UDP flow's record waits for its minute of idleness: the agent's
	// answer came while the client waited, which is all the record needs.
	if !agent.foundUDP("198.51.100.20:5000") {
		t.Error("the UDP echo reached the guest before its owner was found")
	}
}

// An answer not held, since too many wait, leaves its record to wait for
// the owner as any record does: it still gets it from an agent slower
// than the flow. And a lookup held in vain once is not waited for again
// (a response that fails after its headers came): a record waits
// ownerHold at most in all.
func TestAnswerHoldsPastTheBoundAndTwice(t *testing.T) {
	o := newOwners()
	defer o.close()
	honest := portOwners(nil)
	o.src = func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		time.Sleep(100 * time.Millisecond)
		return honest(ctx, socks)
	}
	o.mu.Lock()
	o.holding = maxOwnerHolds
	o.mu.Unlock()
	r := &audit.Record{}
	o.ask(r, "tcp", 4242, netipGateway(ProxyPort))
	start := time.Now()
	o.holdAnswer(r)
	if took := time.Since(start); took > ownerHold/2 {
		t.Errorf("an answer past the bound was held %v", took)
	}
	written := make(chan *audit.Record, 1)
	o.then(r, func(r *audit.Record) { written <- r })
	select {
	case r := <-written:
		if r.Owner == nil || r.Owner.PID != 4242 {
			t.Errorf("the record of an answer past the bound: owner %+v", r.Owner)
		}
	case <-time.After(ownerWait + time.Second):
		t.Fatal("the record was never written")
	}
	o.mu.Lock()
	o.holding = 0
	o.mu.Unlock()

	o2 := newOwners()
	defer o2.close()
	o2.src = stalled
	r = &audit.Record{}
	o2.ask(r, "tcp", 4243, netipGateway(ProxyPort))
	start = time.Now()
	o2.holdAnswer(r)
	o2.holdAnswer(r)
	if took := time.Since(start); took > ownerHold+ownerHold/2 {
		t.Errorf("two holds of one lookup took %v; want about %v", took, ownerHold)
	}
}
