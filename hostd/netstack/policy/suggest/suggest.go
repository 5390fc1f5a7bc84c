// Package suggest proposes a network policy from evidence: the audit log
// of a period (every DNS query and flow of the guest, allowed or denied)
// read into a minimal allowlist, the exact names and addresses the guest
// used, with counts, ports and when each was seen, and each marked as
// already listed, new, denied by the deny list, or private (never
// proposed). `cowork policy suggest` prints it and `cowork policy learn`
// makes one after a task that ran in learn mode.
//
// The log is the guest's doing: names in it are hostile (see nameProblem),
// its lines may be cut or garbled (skipped and counted), and it may hold
// millions of distinct names (at most MaxTracked are counted one by one).
// What comes out is proposed, never applied: `cowork policy apply` shows
// the difference and asks.
package suggest

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Options choose the period and the shape of the proposal.
type Options struct {
	// Since and Until bound the period; zero is unbounded. A flow counts
	// when it ended at or after Since and began at or before Until.
	Since, Until time.Time
	// Top is how many names, and how many addresses, are listed and
	// proposed at most, the most used first (DefaultTop when 0; at most
	// MaxTracked). What is left out is counted.
	Top int
	// Group proposes *.DOMAIN instead of the names under DOMAIN when two
	// or more new names share that registrable domain (names already
	// listed, and DOMAIN itself, do not count). Without it every
	// name is proposed as it was seen, and such groups are only noted.
	Group bool
	// Prune drops from the proposal the current allow entries that
	// nothing in the period used; without it they are kept, and noted.
	Prune bool
}

// Bounds.
const (
	DefaultTop = 50
	// MaxTracked bounds the destinations counted one by one (names and
	// addresses together): past it, records are counted in Untracked.
	MaxTracked = 10000
	// MaxRejected bounds the rejected names kept; the rest are counted.
	MaxRejected = 100
	// maxPorts bounds the ports kept for one destination.
	maxPorts = 16
)

// Statuses of a destination.
const (
	// StatusListed: an allow entry of the current policy covers it (Entry).
	StatusListed = "listed"
	// StatusNew: nothing covers it; the proposal adds Entry.
	StatusNew = "new"
	// StatusDenied: the deny list covers it (Entry). The deny list always
	// wins: it is not proposed; remove the entry if the task needs it.
	StatusDenied = "denied"
	// StatusPrivate: an address the policy refuses by design (the host,
	// private, link-local, metadata), or a name that led only to such
	// addresses. Never proposed: opening one is a decision, by CIDR.
	StatusPrivate = "private"
)

// Dest is one destination of the period: a name the guest resolved or
// asked the proxy for, or an address it reached with no name.
type Dest struct {
	Name   string `json:"name,omitempty"`
	Addr   string `json:"addr,omitempty"`
	Status string `json:"status"`
	// Entry is the allow or deny entry that covers it (listed, denied),
	// or what the proposal adds for it (new: the name, the address, or
	// with Group the *.DOMAIN it falls under).
	Entry string `json:"entry,omitempty"`
	// Why says why a private destination is never proposed.
	Why string `json:"why,omitempty"`
	// Ports are the ports its flows went to ("443", "53/udp").
	Ports []string `json:"ports,omitempty"`
	// Flows and Queries count its connections and DNS queries; Denied
	// counts those of either the policy refused, Learned those learn mode
	// let through (see policy.Rules.Learning).
	Flows    int64     `json:"flows"`
	Queries  int64     `json:"queries"`
	Denied   int64     `json:"denied"`
	Learned  int64     `json:"learned,omitempty"`
	BytesOut int64     `json:"bytes_out"`
	BytesIn  int64     `json:"bytes_in"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`

	private int64 // flows denied as private
	ports   map[string]struct{}
	morePts bool
}

func (d *Dest) count() int64 { return d.Flows + d.Queries }

// Rejected is a name in the log that may never be proposed, and why.
// Name is as logged (clipped): it may hold anything, escape it to show it.
type Rejected struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
	Count  int64  `json:"count"`
}

// HostPort is a port of the host's loopback (host.cowork.internal) the
// guest reached for. It is never proposed: `cowork policy expose` opens
// one, knowingly.
type HostPort struct {
	Port    int   `json:"port"`
	Flows   int64 `json:"flows"`
	Denied  int64 `json:"denied"`
	Exposed bool  `json:"exposed"`
}

// Group is a registrable domain several new names of the period are under.
type Group struct {
	Domain string   `json:"domain"`
	Names  []string `json:"names"`
	// Proposed says the proposal holds *.Domain (Options.Group).
	Proposed bool `json:"proposed"`
}

// hostAddr is the host's loopback as the guest sees it, and gatewayAddr
// the gateway (DNS, the proxy): their flows are the host's business.
var (
	hostAddr    = netip.MustParseAddr("192.168.127.254")
	gatewayAddr = netip.MustParseAddr("192.168.127.1")
)

// Collector counts records into destinations. Add each record of the
// period, then Finish.
type Collector struct {
	o         Options
	names     map[string]*Dest
	addrs     map[netip.Addr]*Dest
	hostPorts map[int]*HostPort
	rejected  map[string]*Rejected
	s         Suggestion
}

// NewCollector is a Collector for o.
func NewCollector(o Options) *Collector {
	if o.Top <= 0 {
		o.Top = DefaultTop
	}
	o.Top = min(o.Top, MaxTracked)
	return &Collector{o: o, names: map[string]*Dest{}, addrs: map[netip.Addr]*Dest{},
		hostPorts: map[int]*HostPort{}, rejected: map[string]*Rejected{}}
}

// FromLog reads the audit log at path (its rotated files first) and
// counts the records of the period; damaged lines are skipped and counted
// in Skipped, never an error.
func FromLog(ctx context.Context, path string, o Options) (*Collector, error) {
	c := NewCollector(o)
	skipped, err := audit.Stream(ctx, path, o.Since, false, func(r *audit.Record) error {
		c.Add(r)
		return ctx.Err()
	})
	c.s.Skipped = skipped
	return c, err
}

// Add counts one record, when it falls in the period.
func (c *Collector) Add(r *audit.Record) {
	began := r.Time
	if !r.Start.IsZero() {
		began = r.Start
	}
	if r.Time.Before(c.o.Since) || (!c.o.Until.IsZero() && began.After(c.o.Until)) {
		return
	}
	n := int64(1)
	if r.Suppressed > 0 { // a throttle's summary stands for the denials it counted
		n = r.Suppressed
	}
	c.s.Records += n
	if c.s.First.IsZero() || r.Time.Before(c.s.First) {
		c.s.First = r.Time
	}
	if r.Time.After(c.s.Last) {
		c.s.Last = r.Time
	}
	if r.Learn {
		c.s.Learned += n
	}
	switch r.Kind {
	case audit.KindDNS:
		c.addQuery(r, n)
	case audit.KindTCP, audit.KindUDP, audit.KindHTTP, audit.KindConnect:
		c.addFlow(r, n)
	default: // pings (only the gateway answers), relay calls, other protocols, ports
		c.s.Ignored += n
	}
}

// addQuery counts a DNS query for an address: the only trace, in
// allowlist mode, of a name the task needed (its query refused, it never
// connected). Queries answered by the gateway itself (host.cowork.internal),
// refused as malformed, or of other types (PTR, TXT, SRV) are not.
func (c *Collector) addQuery(r *audit.Record, n int64) {
	switch r.QType {
	case "A", "AAAA", "HTTPS", "":
	default:
		c.s.Ignored += n
		return
	}
	if r.Rule == "local" || strings.HasPrefix(r.Rule, "dns:") || strings.HasPrefix(r.Rule, "limit:") {
		c.s.Ignored += n
		return
	}
	d := c.dest(r.Name, netip.Addr{}, n)
	if d == nil {
		return
	}
	d.Queries += n
	c.seen(d, r, n)
}

// addFlow counts a connection, a UDP flow or a proxied request.
func (c *Collector) addFlow(r *audit.Record, n int64) {
	ap, _ := netip.ParseAddrPort(r.Dst)
	a := ap.Addr().Unmap()
	if a == hostAddr && ap.Port() != 0 {
		hp := c.hostPorts[int(ap.Port())]
		if hp == nil {
			if len(c.hostPorts) >= maxPorts*4 {
				c.s.Untracked += n
				return
			}
			hp = &HostPort{Port: int(ap.Port())}
			c.hostPorts[hp.Port] = hp
		}
		hp.Flows += n
		if r.Verdict == audit.Deny {
			hp.Denied += n
		}
		return
	}
	if a == gatewayAddr {
		c.s.Ignored += n
		return
	}
	if r.Name == "" && !a.IsValid() {
		c.s.Ignored += n // refused before it had a destination (a bad port)
		return
	}
	d := c.dest(r.Name, a, n)
	if d == nil {
		return
	}
	d.Flows += n
	if r.Verdict == audit.Deny && strings.HasPrefix(r.Rule, "private:") {
		d.private += n
	}
	if ap.Port() != 0 {
		port := strconv.Itoa(int(ap.Port()))
		if r.Kind == audit.KindUDP {
			port += "/udp"
		}
		if _, ok := d.ports[port]; !ok {
			if len(d.ports) < maxPorts {
				d.ports[port] = struct{}{}
			} else {
				d.morePts = true
			}
		}
	}
	d.BytesOut += r.BytesOut
	d.BytesIn += r.BytesIn
	c.seen(d, r, n)
}

// seen counts r's verdict and time in d.
func (c *Collector) seen(d *Dest, r *audit.Record, n int64) {
	if r.Verdict == audit.Deny {
		d.Denied += n
	}
	if r.Learn {
		d.Learned += n
	}
	if d.First.IsZero() || r.Time.Before(d.First) {
		d.First = r.Time
	}
	if r.Time.After(d.Last) {
		d.Last = r.Time
	}
}

// dest finds or makes the destination of a record: its name when it has
// one that may be proposed, else its address. A name that may not is
// counted among the rejected, and the record is not counted further. nil
// when there is nothing more to count (rejected, or past MaxTracked).
func (c *Collector) dest(name string, a netip.Addr, n int64) *Dest {
	if name != "" {
		// The proxy records an address literal as the name it was asked.
		if la, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
			name, a = "", la.WithZone("").Unmap()
		}
	}
	if name == "" {
		if !a.IsValid() {
			c.s.Ignored += n
			return nil
		}
		if d := c.addrs[a]; d != nil {
			return d
		}
		if c.full() {
			c.s.Untracked += n
			return nil
		}
		d := &Dest{Addr: a.String(), ports: map[string]struct{}{}}
		c.addrs[a] = d
		return d
	}
	if why := nameProblem(name); why != "" {
		c.reject(name, why, n)
		return nil
	}
	key := strings.TrimSuffix(strings.ToLower(name), ".")
	if d := c.names[key]; d != nil {
		return d
	}
	if c.full() {
		c.s.Untracked += n
		return nil
	}
	d := &Dest{Name: key, ports: map[string]struct{}{}}
	c.names[key] = d
	return d
}

func (c *Collector) full() bool { return len(c.names)+len(c.addrs) >= MaxTracked }

func (c *Collector) reject(name, why string, n int64) {
	c.s.RejectedRecords += n
	key := clipName(name)
	if r := c.rejected[key]; r != nil {
		r.Count += n
		return
	}
	if len(c.rejected) >= MaxRejected {
		return
	}
	c.rejected[key] = &Rejected{Name: key, Reason: why, Count: n}
}

// sortDests orders destinations the most used first, then by name.
func sortDests(ds []*Dest) {
	slices.SortFunc(ds, func(a, b *Dest) int {
		if a.count() != b.count() {
			if a.count() > b.count() {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name+a.Addr, b.Name+b.Addr)
	})
}
