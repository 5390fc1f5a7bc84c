package policy

import (
	"net/netip"
	"sort"
	"sync"
	"time"
)

// MinBinding is how long an answer binds its name to an address at least:
// programs keep using addresses well past short TTLs.
const MinBinding = 10 * time.Minute

// Bindings remembers which names the guest resolved to which addresses,
// from the DNS answers the gateway gave it. A connection to an address is
// judged by these names, so an allowed name covers only its own answers,
// and a connection names what it was for in the audit log.
type Bindings struct {
	mu  sync.Mutex
	m   map[netip.Addr]map[string]time.Time // address -> name -> expiry
	now func() time.Time
}

// NewBindings returns an empty table.
func NewBindings() *Bindings {
	return &Bindings{m: map[netip.Addr]map[string]time.Time{}, now: time.Now}
}

// Add binds names (a query's name and its CNAME chain) to an address.
func (b *Bindings) Add(addr netip.Addr, ttl time.Duration, names ...string) {
	exp := b.now().Add(max(ttl, MinBinding))
	b.mu.Lock()
	defer b.mu.Unlock()
	addr = Canonical(addr)
	set := b.m[addr]
	if set == nil {
		set = map[string]time.Time{}
		b.m[addr] = set
	}
	for _, n := range names {
		n = normalize(n)
		if old, ok := set[n]; !ok || old.Before(exp) {
			set[n] = exp
		}
	}
	if len(b.m) > 65536 {
		b.expireLocked()
	}
}

// Names are the live names bound to addr, sorted.
func (b *Bindings) Names(addr netip.Addr) []string {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	var names []string
	for n, exp := range b.m[Canonical(addr)] {
		if exp.After(now) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func (b *Bindings) expireLocked() {
	now := b.now()
	for a, set := range b.m {
		for n, exp := range set {
			if !exp.After(now) {
				delete(set, n)
			}
		}
		if len(set) == 0 {
			delete(b.m, a)
		}
	}
}
