//go:build linux

package netstack

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// Every kind of record names the owner of its flow, as claimed by the
// guest; a denied flow keeps its verdict. (A UDP flow's record waits for
// its minute of idleness; the DNS query is UDP's case.)
func TestRecordsNameTheirOwner(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"198.51.100.66"}})
	var calls atomic.Int64
	tn.SetOwners(portOwners(&calls))
	tn.world.serveTCP(t, "198.51.100.10:80", echo)

	if _, err := tn.lookup(t, "allowed.test"); err != nil {
		t.Fatal(err)
	}
	c, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello\n"))
	c.Read(make([]byte, 6))
	c.Close()
	if c, err := tn.dialTCP(t, "198.51.100.66:80"); err == nil {
		c.Close()
		t.Fatal("a denied address answered")
	}

	for _, w := range []struct {
		what  string
		match func(*audit.Record) bool
		exec  string
	}{
		{"dns", func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Name == "allowed.test" }, "exec-udp"},
		{"tcp", func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.10:80" }, "exec-tcp"},
		{"denied", func(r *audit.Record) bool { return r.Kind == audit.KindTCP && r.Dst == "198.51.100.66:80" }, "exec-tcp"},
	} {
		r := tn.waitRecord(t, w.match)
		o := r.Owner
		if o == nil || o.PID != r.GuestPort || r.GuestPort == 0 || o.Exec != w.exec || o.ClaimedBy != audit.ClaimedByGuest || o.UID != 1000 {
			t.Errorf("%s: owner %+v of a record from guest port %d", w.what, o, r.GuestPort)
		}
		if w.what == "denied" && r.Verdict != audit.Deny {
			t.Errorf("the denied flow's verdict is %q", r.Verdict)
		}
	}
	if calls.Load() == 0 {
		t.Error("the source was never asked")
	}
}

// An answer for a socket that was not asked about in its batch, or a
// second answer for one that was, is dropped: it reaches no record.
func TestForgedOwnersAreDropped(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.10:80", echo)
	honest := portOwners(nil)
	tn.SetOwners(func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		out, _ := honest(ctx, socks)
		var forged []agentcall.SocketOwner
		for _, s := range socks {
			other := s
			other.Port++ // a flow hostd did not ask about
			forged = append(forged,
				agentcall.SocketOwner{Socket: other, PID: 666, Exec: "forged"},
				agentcall.SocketOwner{Socket: agentcall.Socket{Proto: "tcp", Port: 1, Peer: "203.0.113.1:443"}, PID: 666, Exec: "forged"})
		}
		out = append(forged, out...)
		// and a second answer for each socket asked about, after the true one
		for _, s := range socks {
			out = append(out, agentcall.SocketOwner{Socket: s, PID: 666, Exec: "forged"})
		}
		return out, nil
	})
	for range 3 {
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x\n"))
		c.Read(make([]byte, 2))
		c.Close()
	}
	seen := 0
	tn.waitRecord(t, func(r *audit.Record) bool {
		if r.Kind == audit.KindTCP {
			seen++
			if r.Owner == nil || r.Owner.Exec == "forged" || r.Owner.PID != r.GuestPort {
				t.Errorf("record from port %d: owner %+v", r.GuestPort, r.Owner)
			}
		}
		return seen >= 3
	})
	if tn.owners.unsolicited.Load() < 3*3 {
		t.Errorf("%d answers counted as unsolicited, want at least 9", tn.owners.unsolicited.Load())
	}
}
