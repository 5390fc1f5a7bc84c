//go:build linux

package netstack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// forging is portOwners, plus an answer for the next guest port of each
// socket asked about (a flow not asked about) and a second answer for
// each socket, both naming exec "forged": neither may reach a record.
func forging() OwnerSource {
	honest := portOwners(nil)
	return func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		out, _ := honest(ctx, socks)
		for _, s := range socks {
			other := s
			other.Port++
			out = append([]agentcall.SocketOwner{{Socket: other, PID: 666, Exec: "forged"}}, out...)
			out = append(out, agentcall.SocketOwner{Socket: s, PID: 666, Exec: "forged"})
		}
		return out, nil
	}
}

// The proxy's and the relay's records (http, connect, relay; allowed and
// refused) name the guest process behind the request: the one holding
// the guest's socket to the gateway's service port, as the guest claims
// it. Forged answers reach none.
func TestProxiedRecordsNameTheirOwner(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"proxied-deny.test"}})
	tn.SetOwners(forging())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	defer tlsSrv.Close()
	tn.world.mu.Lock()
	tn.world.tcp["198.51.100.30:80"] = strings.TrimPrefix(srv.URL, "http://")
	tn.world.tcp["198.51.100.30:443"] = strings.TrimPrefix(tlsSrv.URL, "https://")
	tn.world.mu.Unlock()
	client := tn.proxyClient()
	for _, u := range []string{"http://proxied.test/", "https://proxied.test/", "http://proxied-deny.test/"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	client.CloseIdleConnections() // a tunnel's line is written when it closes
	c, err := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT proxied-deny.test:443 HTTP/1.1\r\nHost: proxied-deny.test:443\r\n\r\n")
	bufio.NewReader(c).ReadString('\n')
	c.Close()
	if code, _ := tn.relayDo(t, "POST", "/v1/messages", apiKey(placeholderPrefix+"0000")); code != http.StatusUnauthorized {
		t.Fatalf("an unknown placeholder: %d", code)
	}

	proxy := fmt.Sprintf("curl %s:%d", GatewayIP, ProxyPort)
	relay := fmt.Sprintf("curl %s:%d", GatewayIP, RelayPort)
	for _, w := range []struct {
		what    string
		match   func(*audit.Record) bool
		cmd     string
		verdict string
	}{
		{"http", func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied.test" }, proxy, audit.Allow},
		{"connect", func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Name == "proxied.test" }, proxy, audit.Allow},
		{"denied http", func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied-deny.test" }, proxy, audit.Deny},
		{"denied connect", func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.Name == "proxied-deny.test" }, proxy, audit.Deny},
		{"refused relay", func(r *audit.Record) bool { return r.Kind == audit.KindRelay }, relay, audit.Deny},
	} {
		r := tn.waitRecord(t, w.match)
		o := r.Owner
		if o == nil || r.GuestPort == 0 || o.PID != r.GuestPort || o.Exec != "exec-tcp" || o.Cmd != w.cmd || o.ClaimedBy != audit.ClaimedByGuest {
			t.Errorf("%s: owner %+v of a record from guest port %d", w.what, o, r.GuestPort)
		}
		if r.Verdict != w.verdict {
			t.Errorf("%s: verdict %q, want %q", w.what, r.Verdict, w.verdict)
		}
	}
}

// A refusal that ends the guest's socket waits for the owner first: the
// guest's kernel no longer lists a socket reset, or closed by a client
// that got its 403, and an agent asked after that finds nothing. The
// fake agent here answers only while the guest still waits for the
// refusal.
func TestRefusalsWaitForTheirOwner(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"198.51.100.66", "proxied-deny.test"}})
	var waiting atomic.Bool
	honest := portOwners(nil)
	tn.SetOwners(func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		if !waiting.Load() {
			return nil, nil // the socket is gone
		}
		return honest(ctx, socks)
	})

	waiting.Store(true)
	c, err := tn.dialTCP(t, "198.51.100.66:80")
	waiting.Store(false)
	if err == nil {
		c.Close()
		t.Fatal("a denied address answered")
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.66:80" })
	if r.Owner == nil || r.Owner.PID != r.GuestPort || r.Verdict != audit.Deny {
		t.Errorf("a refused SYN's record: owner %+v, verdict %s", r.Owner, r.Verdict)
	}

	client := tn.proxyClient()
	waiting.Store(true)
	resp, err := client.Get("http://proxied-deny.test/")
	waiting.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	r = tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Name == "proxied-deny.test" })
	if resp.StatusCode != http.StatusForbidden || r.Owner == nil || r.Owner.PID != r.GuestPort || r.Verdict != audit.Deny {
		t.Errorf("a 403's record: owner %+v, verdict %s, status %d", r.Owner, r.Verdict, resp.StatusCode)
	}

	waiting.Store(true)
	code, _ := tn.relayDo(t, "POST", "/v1/messages", apiKey(placeholderPrefix+"0000"))
	waiting.Store(false)
	r = tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindRelay })
	if code != http.StatusUnauthorized || r.Owner == nil || r.Owner.PID != r.GuestPort {
		t.Errorf("a refused relay call's record: owner %+v, status %d", r.Owner, code)
	}
}

// Against an agent that never answers, at most maxOwnerHolds refusals
// wait at once, each ownerHold at most; the others go at once. Every
// record is still written, and no lookup is left held.
func TestRefusalHoldsAreBounded(t *testing.T) {
	o := newOwners()
	defer o.close()
	o.src = stalled
	const n = maxOwnerHolds + 36
	recs := make([]*audit.Record, n)
	for i := range recs {
		recs[i] = &audit.Record{}
		o.ask(recs[i], "tcp", 1+i, netipGateway(ProxyPort))
	}
	start := time.Now()
	var quick atomic.Int64
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			o.hold(r)
			if time.Since(t0) < ownerHold/2 {
				quick.Add(1)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > ownerHold+time.Second {
		t.Errorf("the holds took %v; want at most about %v", took, ownerHold)
	}
	if q, u := quick.Load(), o.unheld.Load(); q != n-maxOwnerHolds || u != n-maxOwnerHolds {
		t.Errorf("%d refusals went at once (%d counted); want the %d over the bound", q, u, n-maxOwnerHolds)
	}
	o.mu.Lock()
	holding := o.holding
	o.mu.Unlock()
	if holding != 0 {
		t.Errorf("%d holds left", holding)
	}

	// With an answer, a hold ends with it.
	o2 := newOwners()
	defer o2.close()
	o2.src = portOwners(nil)
	r := &audit.Record{}
	o2.ask(r, "tcp", 4242, netipGateway(ProxyPort))
	t0 := time.Now()
	o2.hold(r)
	if took := time.Since(t0); took > ownerHold/2 {
		t.Errorf("a hold whose answer came took %v", took)
	}
	o2.then(r, func(r *audit.Record) {
		if r.Owner == nil || r.Owner.PID != 4242 {
			t.Errorf("owner %+v after the hold", r.Owner)
		}
	})
}

// Requests whose record is never written (relay refusals past the rate
// limit) leave no lookup held: otherwise a guest could use up
// maxOwnerLookups and switch provenance off for everyone.
func TestUnrecordedRequestsLeaveNoLookup(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.SetOwners(portOwners(nil))
	for range refusalBurst + 20 {
		if code, _ := tn.relayDo(t, "POST", "/nowhere", nil); code != http.StatusNotFound {
			t.Fatalf("status %d", code)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tn.owners.mu.Lock()
		held, byRec := tn.owners.held, len(tn.owners.byRec)
		tn.owners.mu.Unlock()
		if held == 0 && byRec == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups held, %d records in byRec after every request ended", held, byRec)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// netipGateway is the gateway's port as the guest's socket names it.
func netipGateway(port uint16) netip.AddrPort { return netip.AddrPortFrom(gatewayAddr, port) }

// A request inside a tunnel the proxy ends for a host that holds secrets
// names its owner too: the tunnel's guest socket's.
func TestInterceptedRequestsNameTheirOwner(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	sn.SetOwners(forging())
	c := sn.proxiedClient(sn.guestRoot)
	if resp, body := get(t, c, "https://gh.test/user", http.Header{"Authorization": {"Bearer " + testPlaceholder}}); resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	c.CloseIdleConnections()
	inner := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.TLSTerminated })
	tunnel := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindConnect && r.TLSTerminated })
	for _, r := range []*audit.Record{inner, tunnel} {
		if r.Owner == nil || r.Owner.Exec != "exec-tcp" || r.Owner.PID != tunnel.GuestPort || r.GuestPort != tunnel.GuestPort {
			t.Errorf("%s record from guest port %d: owner %+v", r.Kind, r.GuestPort, r.Owner)
		}
	}
}

// A refusal whose owner did not come within its hold, or that was not
// held at all (too many were), goes without it: its record is written
// at once, not after another ownerWait. Its socket ends with the
// refusal, so a later answer would find nothing, and the relay's
// refusal is audited before the guest has its answer, as without
// provenance.
func TestAnUnansweredHoldWritesAtOnce(t *testing.T) {
	o := newOwners()
	defer o.close()
	o.src = stalled
	for _, full := range []bool{false, true} {
		o.mu.Lock()
		if full {
			o.holding = maxOwnerHolds
		}
		o.mu.Unlock()
		r := &audit.Record{}
		o.ask(r, "tcp", 4242, netipGateway(ProxyPort))
		o.hold(r)
		var wrote atomic.Bool
		o.then(r, func(*audit.Record) { wrote.Store(true) })
		if !wrote.Load() {
			t.Errorf("holds full %v: the record of a refusal that went without its owner waits on", full)
		}
	}
	o.mu.Lock()
	o.holding = 0
	o.mu.Unlock()

	tn := newTestNet(t, policy.Policy{})
	tn.SetOwners(stalled)
	start := time.Now()
	code, _ := tn.relayDo(t, "POST", "/v1/messages", apiKey(placeholderPrefix+"0000"))
	took := time.Since(start)
	if n := len(tn.records(func(r *audit.Record) bool { return r.Kind == audit.KindRelay })); code != http.StatusUnauthorized || n != 1 {
		t.Errorf("a refused relay call answered %d after %v, its line written before: %d; want 401 and 1", code, took, n)
	}
	if took > ownerHold+ownerHold/2 {
		t.Errorf("a refused relay call took %v against a silent agent; want about %v", took, ownerHold)
	}
}

// A request refused inside a tunnel the proxy ends (421: its Host is not
// the host its TLS was for) waits for its owner too, the tunnel's
// socket's: the fake agent answers only while the guest waits.
func TestMisdirectedRequestWaitsForItsOwner(t *testing.T) {
	sn := newSecretNet(t, SecretAuthorization, true)
	var waiting atomic.Bool
	honest := portOwners(nil)
	sn.SetOwners(func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		if !waiting.Load() {
			return nil, nil
		}
		return honest(ctx, socks)
	})
	c := sn.proxiedClient(sn.guestRoot)
	// The tunnel first, its owner known: only the refused request's
	// lookup is asked while the guest waits for its 421.
	waiting.Store(true)
	if resp, body := get(t, c, "https://gh.test/user", nil); resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	time.Sleep(50 * time.Millisecond)
	waiting.Store(false)
	req, _ := http.NewRequest("GET", "https://gh.test/", nil)
	req.Host = "other.test"
	waiting.Store(true)
	resp, err := c.Do(req)
	waiting.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.CloseIdleConnections()
	r := sn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.Verdict == audit.Deny })
	if resp.StatusCode != http.StatusMisdirectedRequest || r.Owner == nil || r.GuestPort == 0 || r.Owner.PID != r.GuestPort {
		t.Errorf("a 421's record: owner %+v from guest port %d, status %d", r.Owner, r.GuestPort, resp.StatusCode)
	}
}
