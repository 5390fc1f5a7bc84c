package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeClock drives a table's time.
type fakeClock struct{ t time.Time }

func newTable() (*Bindings, *fakeClock) {
	b := NewBindings()
	c := &fakeClock{t: time.Unix(1e9, 0)}
	b.now = func() time.Time { return c.t }
	return b, c
}

func addr4(i uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// flood resolves n random names the way a hostile guest would: a
// wildcard domain of its own, to random addresses and to one address.
// Names of about 240 bytes run out the bytes first, short ones the pairs.
func flood(b *Bindings, rng *rand.Rand, n int, long bool) (added int) {
	pad := "a"
	if long {
		pad = strings.Repeat("a", 200)
	}
	for i := range n {
		name := fmt.Sprintf("%016x.%s.attacker.example", rng.Uint64(), pad)
		a := addr4(0x0b000000 + rng.Uint32N(1<<20))
		if i%2 == 0 {
			a = addr4(0x0b0b0b0b)
		}
		if b.Add(a, time.Duration(rng.IntN(1<<31))*time.Second, name, "cname-"+name) {
			added++
		}
	}
	return added
}

// Millions of names cost the table a fixed budget, and its bounds hold,
// whichever runs out first.
func TestBindingsHoldAFlood(t *testing.T) {
	for _, long := range []bool{false, true} {
		before := heapInUse()
		b, _ := newTable()
		flood(b, rand.New(rand.NewPCG(1, 2)), 1_000_000, long)
		grown := int64(heapInUse()) - int64(before)
		const budget = 24 << 20
		if grown > budget {
			t.Errorf("the table grew the heap by %d MiB, over its budget of %d MiB", grown>>20, budget>>20)
		}
		t.Logf("after 1M names (long %v): %d pairs, %d bytes of names, heap +%.1f MiB", long, b.Len(), b.nameBytes, float64(grown)/(1<<20))
		if b.Len() > MaxBindings || b.nameBytes > MaxNameBytes {
			t.Errorf("%d pairs, %d bytes of names: over the bounds", b.Len(), b.nameBytes)
		}
		if full := b.Len() >= MaxBindings-1 || b.nameBytes >= MaxNameBytes-2*maxNameLen; !full {
			t.Errorf("the flood filled %d pairs, %d bytes: the test does not reach a bound", b.Len(), b.nameBytes)
		}
		if n := len(b.byAddr[addr4(0x0b0b0b0b)]); n > MaxNamesPerAddr {
			t.Errorf("one address holds %d names", n)
		}
		for a, list := range b.byAddr {
			for i, e := range list {
				if e.slot != i || e.addr != a || b.byKey[e.bindingKey] != e {
					t.Fatalf("the table's indexes disagree at %v", e.bindingKey)
				}
			}
		}
		runtime.KeepAlive(b)
	}
}

// A full table refuses new bindings and keeps every live one: a deny-list
// name bound before a flood still denies after it (an evicted binding
// would have let the connection through in default mode), and an allowed
// one still allows. Once bindings expire, there is room again.
func TestAFullTableForgetsNothingLive(t *testing.T) {
	b, c := newTable()
	evil, ok := netip.MustParseAddr("203.0.113.66"), netip.MustParseAddr("203.0.113.7")
	if !b.Add(evil, time.Minute, "innocent.example", "evil.example") || !b.Add(ok, time.Hour, "ok.example") {
		t.Fatal("an empty table refused")
	}
	deny, _ := Compile(Policy{Deny: []string{"evil.example"}}, netip.MustParseAddr("192.168.127.254"), nil)
	allow, _ := Compile(Policy{Mode: ModeAllowlist, Allow: []string{"ok.example"}}, netip.MustParseAddr("192.168.127.254"), nil)
	check := func(when string) {
		t.Helper()
		if v := deny.CheckFlow(TCP, netip.AddrPortFrom(evil, 443), b.Names(evil)); v.Allow {
			t.Errorf("%s: a connection to the deny-listed name's address is allowed (%s)", when, v.Rule)
		}
		if v := allow.CheckFlow(TCP, netip.AddrPortFrom(ok, 443), b.Names(ok)); !v.Allow {
			t.Errorf("%s: a connection to the allowed name's address is denied (%s)", when, v.Rule)
		}
	}
	check("before the flood")
	added := flood(b, rand.New(rand.NewPCG(3, 4)), 100_000, true)
	refused := false
	for i := range 100 { // what the flood left of the bytes
		if !b.Add(addr4(0x0c000001), time.Minute, fmt.Sprintf("%03d%s", i, strings.Repeat("z", 240))) {
			refused = true
			break
		}
	}
	if !refused {
		t.Error("the full table keeps taking names")
	}
	check("after the flood")
	if added == 0 || added == 100_000 {
		t.Errorf("%d of the flood's answers were bound", added)
	}
	// Binding a name again (a program re-resolving) works on a full table.
	if !b.Add(ok, time.Hour, "OK.example.") {
		t.Error("re-binding a bound name was refused")
	}
	// Everything the flood bound expires within MaxBinding.
	c.t = c.t.Add(MaxBinding + time.Second)
	if !b.Add(addr4(0x0c000002), time.Minute, "one-more.example") {
		t.Error("no room once the flood's bindings expired")
	}
	if n := b.Len(); n != 1 || b.nameBytes != len("one-more.example") {
		t.Errorf("%d pairs, %d bytes left after all expired and one was added", n, b.nameBytes)
	}
}

func TestBindingLimits(t *testing.T) {
	b, c := newTable()
	a := netip.MustParseAddr("198.51.100.1")
	for i := range MaxNamesPerAddr {
		if !b.Add(a, 0, fmt.Sprintf("n%d.example", i)) {
			t.Fatalf("name %d refused", i)
		}
	}
	if b.Add(a, 0, "one-too-many.example") || len(b.Names(a)) != MaxNamesPerAddr {
		t.Error("an address took more than MaxNamesPerAddr names")
	}
	if b.Add(netip.MustParseAddr("198.51.100.2"), 0, strings.Repeat("x", maxNameLen+1)) {
		t.Error("a name longer than DNS allows was bound")
	}
	// All or nothing: one name over the limit binds none of an answer's.
	if b.Add(a, 0, "n0.example", "new.example") || slicesContains(b.Names(a), "new.example") {
		t.Error("part of an answer that did not fit was bound")
	}

	// TTLs are held to [MinBinding, MaxBinding].
	short, long := netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("198.51.100.4")
	b.Add(short, time.Second, "short.example")
	b.Add(long, 1<<62, "long.example")
	c.t = c.t.Add(MinBinding - time.Second)
	if len(b.Names(short)) != 1 {
		t.Error("a short TTL bound for less than MinBinding")
	}
	c.t = c.t.Add(MaxBinding)
	if len(b.Names(long)) != 0 {
		t.Error("a huge TTL bound for more than MaxBinding")
	}
}

// Binding a name again extends it; the earlier, shorter expiry does not
// remove it.
func TestRebindingExtends(t *testing.T) {
	b, c := newTable()
	a := netip.MustParseAddr("198.51.100.9")
	b.Add(a, 0, "x.example")
	c.t = c.t.Add(MinBinding / 2)
	b.Add(a, 0, "x.example", "y.example")
	c.t = c.t.Add(MinBinding/2 + time.Second)
	b.Add(netip.MustParseAddr("198.51.100.10"), 0, "z.example") // runs expiry
	if got := b.Names(a); len(got) != 2 || got[0] != "x.example" || got[1] != "y.example" {
		t.Errorf("names after the first expiry passed: %v", got)
	}
	c.t = c.t.Add(MinBinding)
	b.Add(netip.MustParseAddr("198.51.100.10"), 0, "z.example")
	if got := b.Names(a); len(got) != 0 || b.Len() != 1 {
		t.Errorf("names after both expired: %v, %d pairs held", got, b.Len())
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// BenchmarkNamesOnAFullTable: a lookup costs the same on a table a flood
// filled as on an empty one (it was 2.4 s with a million names).
func BenchmarkNamesOnAFullTable(b *testing.B) {
	t, _ := newTable()
	flood(t, rand.New(rand.NewPCG(5, 6)), 1_000_000, false)
	a := addr4(0x0b0b0b0b)
	b.ResetTimer()
	for b.Loop() {
		t.Names(a)
	}
}

// BenchmarkAddOnAFullTable: so does an Add the full table refuses.
func BenchmarkAddOnAFullTable(b *testing.B) {
	t, _ := newTable()
	flood(t, rand.New(rand.NewPCG(7, 8)), 1_000_000, false)
	b.ResetTimer()
	i := uint32(0)
	for b.Loop() {
		i++
		t.Add(addr4(0x0d000000+i), time.Minute, "refused.example")
	}
}
