//go:build linux

package netstack

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// When the table of resolved names is full (a guest resolved a flood of
// names), an answer it cannot bind is withheld: the guest never gets an
// address the policy would judge without its name. Names bound already
// still resolve.
func TestDNSAnswerWithheldWhenTheTableIsFull(t *testing.T) {
	tn := newTestNet(t, policy.Policy{Deny: []string{"blocked.test"}})
	if m, err := tn.lookup(t, "allowed.test"); err != nil || len(m.Answer) != 1 {
		t.Fatalf("before the flood: %v, %v", m, err)
	}
	for i := 0; tn.bindings.Len() < policy.MaxBindings; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !tn.bindings.Add(a, time.Hour, fmt.Sprintf("n%d.flood.test", i)) {
			t.Fatalf("the table refused at %d pairs", tn.bindings.Len())
		}
	}
	m, err := tn.lookup(t, "cname.test") // binds a name not bound yet
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
		t.Errorf("an answer that could not be bound was given: %v", m)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindDNS && r.Name == "cname.test" })
	if r.RCode != "SERVFAIL" || r.Error == "" || len(r.Answers) != 0 {
		t.Errorf("record %+v", r)
	}
	if m, err := tn.lookup(t, "allowed.test"); err != nil || len(m.Answer) != 1 {
		t.Errorf("a name bound before the flood no longer resolves: %v, %v", m, err)
	}
}
