package policy

import (
	"container/heap"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// How long an answer binds its names to an address: at least MinBinding,
// as programs keep using addresses well past short TTLs, and at most
// MaxBinding, as resolvers cap what they cache (unbound's default is a
// day), so that a guest cannot hold the table's room forever with huge
// TTLs from its own name server.
const (
	MinBinding = 10 * time.Minute
	MaxBinding = 24 * time.Hour
)

// Bounds of the table: the guest chooses what it resolves, and a hostile
// one resolves millions of names (a wildcard domain of its own, all to one
// address or to many). These hold the table to a few MiB whatever it does,
// and far above what programs resolve in the hours a binding lives.
const (
	MaxBindings     = 1 << 15 // (address, name) pairs
	MaxNamesPerAddr = 128     // names bound to one address
	MaxNameBytes    = 4 << 20 // the names' lengths, summed over the pairs
	maxNameLen      = 255     // a DNS name is at most 255 bytes
)

// Bindings remembers which names the guest resolved to which addresses,
// from the DNS answers the gateway gave it. A connection to an address is
// judged by these names, so an allowed name covers only its own answers,
// and a connection names what it was for in the audit log.
//
// The table never forgets a binding before it expires: were it to drop one
// to make room, a connection to that address would be judged without the
// name, and while in allowlist mode that only denies, in default mode a
// name on the deny list (a CNAME target, say) would no longer deny it. So
// a full table refuses new bindings instead (Add reports false), and the
// DNS server then withholds the answer it could not bind: a flood of names
// costs the guest its own resolution until bindings expire, never a
// decision. Expiry is amortized (a heap by expiry time, popped as Add
// goes), and Names looks at one address's names only.
type Bindings struct {
	mu        sync.Mutex
	byKey     map[bindingKey]*binding
	byAddr    map[netip.Addr][]*binding
	byExp     expiryHeap
	nameBytes int
	now       func() time.Time
}

type bindingKey struct {
	addr netip.Addr
	name string
}

type binding struct {
	bindingKey
	exp  int64 // unix nanoseconds
	heap int   // index in byExp
	slot int   // index in byAddr[addr]
}

// NewBindings returns an empty table.
func NewBindings() *Bindings {
	return &Bindings{byKey: map[bindingKey]*binding{}, byAddr: map[netip.Addr][]*binding{}, now: time.Now}
}

// Add binds names (a query's name and its CNAME chain) to an address for
// ttl, within [MinBinding, MaxBinding]. It reports false, and binds
// nothing new, when the table has no room for all of them: the answer
// should then not reach the guest. Names bound already have their expiry
// extended either way.
func (b *Bindings) Add(addr netip.Addr, ttl time.Duration, names ...string) bool {
	now := b.now()
	exp := now.Add(min(max(ttl, MinBinding), MaxBinding)).UnixNano()
	addr = Canonical(addr)
	norm := make([]string, 0, len(names))
	for _, n := range names {
		if n = normalize(n); !slices.Contains(norm, n) {
			norm = append(norm, n)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireLocked(now.UnixNano())
	fresh, bytes := 0, 0
	for _, n := range norm {
		if e := b.byKey[bindingKey{addr, n}]; e != nil {
			if exp > e.exp {
				e.exp = exp
				heap.Fix(&b.byExp, e.heap)
			}
			continue
		}
		if len(n) > maxNameLen {
			return false
		}
		fresh++
		bytes += len(n)
	}
	if fresh == 0 {
		return true
	}
	if len(b.byKey)+fresh > MaxBindings || len(b.byAddr[addr])+fresh > MaxNamesPerAddr || b.nameBytes+bytes > MaxNameBytes {
		return false
	}
	for _, n := range norm {
		k := bindingKey{addr, n}
		if b.byKey[k] != nil {
			continue
		}
		e := &binding{bindingKey: k, exp: exp, slot: len(b.byAddr[addr])}
		b.byKey[k] = e
		b.byAddr[addr] = append(b.byAddr[addr], e)
		heap.Push(&b.byExp, e)
		b.nameBytes += len(n)
	}
	return true
}

// Names are the live names bound to addr, sorted.
func (b *Bindings) Names(addr netip.Addr) []string {
	now := b.now().UnixNano()
	b.mu.Lock()
	var names []string
	for _, e := range b.byAddr[Canonical(addr)] {
		if e.exp > now {
			names = append(names, e.name)
		}
	}
	b.mu.Unlock()
	slices.Sort(names)
	return names
}

// Len is the number of (address, name) pairs held, expired ones that Add
// has not cleared yet included.
func (b *Bindings) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byKey)
}

// expireLocked removes the bindings expired at now, soonest first.
func (b *Bindings) expireLocked(now int64) {
	for len(b.byExp) > 0 && b.byExp[0].exp <= now {
		e := heap.Pop(&b.byExp).(*binding)
		delete(b.byKey, e.bindingKey)
		b.nameBytes -= len(e.name)
		list := b.byAddr[e.addr]
		last := list[len(list)-1]
		list[e.slot], last.slot = last, e.slot
		list[len(list)-1] = nil
		if list = list[:len(list)-1]; len(list) == 0 {
			delete(b.byAddr, e.addr)
		} else {
			b.byAddr[e.addr] = list
		}
	}
}

// expiryHeap orders bindings by expiry, soonest first (container/heap).
type expiryHeap []*binding

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].exp < h[j].exp }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heap, h[j].heap = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*binding)
	e.heap = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
