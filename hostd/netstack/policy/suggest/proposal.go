package suggest

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// Suggestion is what the period's log shows, and the policy it proposes.
type Suggestion struct {
	// Since and Until are the period asked (zero: unbounded); First and
	// Last the times of its first and last record.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
	// Records counts the records of the period; Skipped the damaged lines
	// of the log (cut, not JSON, not a record), whichever period they
	// were of: `cowork audit verify` says more. Ignored counts records
	// that say nothing of the policy (relay calls, pings, PTR queries),
	// Learned those learn mode allowed.
	Records int64 `json:"records"`
	Skipped int   `json:"skipped"`
	Ignored int64 `json:"ignored"`
	Learned int64 `json:"learned"`

	// Names and Addrs are the destinations, the most used first, at most
	// Options.Top of each; LeftOut counts those past it, which are
	// neither shown nor proposed. Untracked counts the records of
	// destinations past MaxTracked.
	Names     []*Dest `json:"names"`
	Addrs     []*Dest `json:"addrs"`
	LeftOut   int     `json:"left_out"`
	Untracked int64   `json:"untracked"`
	// HostPorts are the host's loopback ports reached for.
	HostPorts []HostPort `json:"host_ports,omitempty"`
	// Rejected are the names that may not go into a policy, at most
	// MaxRejected; RejectedRecords counts all their records.
	Rejected        []Rejected `json:"rejected,omitempty"`
	RejectedRecords int64      `json:"rejected_records"`
	// Groups are the registrable domains two or more new names are under
	// (the domain itself aside); listed names under them are shown too.
	Groups []Group `json:"groups,omitempty"`
	// Unused are the current allow entries nothing in the period used.
	Unused []string `json:"unused,omitempty"`

	// Current is the policy the suggestion was made against; Policy the
	// one it proposes: allowlist mode, the current allow entries (less
	// Removed) and Added, the deny list and host ports as they are.
	Current policy.Policy `json:"current"`
	Policy  policy.Policy `json:"policy"`
	Added   []string      `json:"added"`
	Removed []string      `json:"removed,omitempty"`
}

// Finish judges each destination against the current policy and makes
// the proposal. An error means the current policy does not compile, or
// (never expected) the proposal does not: nothing is proposed then.
func (c *Collector) Finish(current policy.Policy) (*Suggestion, error) {
	rules, err := policy.Compile(current, netip.Addr{}, nil)
	if err != nil {
		return nil, fmt.Errorf("the current policy: %w", err)
	}
	s := c.s
	s.Since, s.Until, s.Current = c.o.Since, c.o.Until, current
	used := map[string]bool{}

	names := mapValues(c.names)
	for _, d := range names {
		c.judge(d, rules, netip.Addr{}, used)
	}
	addrs := make([]*Dest, 0, len(c.addrs))
	for a, d := range c.addrs {
		c.judge(d, rules, a, used)
		addrs = append(addrs, d)
	}
	sortDests(names)
	sortDests(addrs)
	s.Groups = groups(names, c.o.Group)
	if len(names) > c.o.Top {
		s.LeftOut += len(names) - c.o.Top
		names = names[:c.o.Top]
	}
	if len(addrs) > c.o.Top {
		s.LeftOut += len(addrs) - c.o.Top
		addrs = addrs[:c.o.Top]
	}
	s.Names, s.Addrs = names, addrs

	for _, hp := range c.hostPorts {
		hp.Exposed = slices.Contains(current.HostPorts, hp.Port)
		s.HostPorts = append(s.HostPorts, *hp)
	}
	slices.SortFunc(s.HostPorts, func(a, b HostPort) int { return a.Port - b.Port })
	for _, r := range c.rejected {
		s.Rejected = append(s.Rejected, *r)
	}
	slices.SortFunc(s.Rejected, func(a, b Rejected) int {
		if a.Count != b.Count {
			return int(b.Count - a.Count)
		}
		return strings.Compare(a.Name, b.Name)
	})

	for _, e := range current.Allow {
		if !used[e] {
			s.Unused = append(s.Unused, e)
		}
	}
	if err := s.propose(c.o); err != nil {
		return nil, err
	}
	return &s, nil
}

// judge sets d's status against the current rules, and marks in used
// the allow entry that covers it.
func (c *Collector) judge(d *Dest, rules *policy.Rules, a netip.Addr, used map[string]bool) {
	d.Ports = make([]string, 0, len(d.ports))
	for p := range d.ports {
		d.Ports = append(d.Ports, p)
	}
	sort.Strings(d.Ports)
	if d.morePts {
		d.Ports = append(d.Ports, "...")
	}
	if a.IsValid() {
		if why, ok := policy.Reserved(a); ok {
			d.Status, d.Why = StatusPrivate, why
			return
		}
		if d.private > 0 { // hostd's own LANs: it said so
			d.Status, d.Why = StatusPrivate, "private: the host's own network"
			return
		}
	}
	if e, ok := rules.DeniedBy(d.Name, a); ok {
		d.Status, d.Entry = StatusDenied, e
		return
	}
	if e, ok := rules.Listed(d.Name, a); ok {
		d.Status, d.Entry = StatusListed, e
		used[e] = true
		return
	}
	if d.Name != "" && d.Flows > 0 && d.private == d.Flows {
		d.Status, d.Why = StatusPrivate, "it led only to private addresses: allowing the name would not open them"
		return
	}
	d.Status, d.Entry = StatusNew, d.Name
	if a.IsValid() {
		d.Entry = a.String()
	}
}

// groups finds the registrable domains (by the public suffix list: never
// a public suffix, so never *.com nor *.github.io) that two or more new
// names are under (the domain itself aside: *.DOMAIN does not cover it).
// Names already listed are shown with them but do not count: with
// api.github.com listed, one new x.github.com is no group, and never
// becomes *.github.com. With propose, the new names under each become
// *.DOMAIN, and the domain itself stays as it was when it was seen.
func groups(names []*Dest, propose bool) []Group {
	by := map[string][]*Dest{}
	for _, d := range names {
		if d.Status != StatusNew && d.Status != StatusListed {
			continue
		}
		dom, err := publicsuffix.EffectiveTLDPlusOne(d.Name)
		if err != nil {
			continue
		}
		by[dom] = append(by[dom], d)
	}
	var out []Group
	for dom, ds := range by {
		if countNew(ds, dom) < 2 {
			continue
		}
		g := Group{Domain: dom}
		for _, d := range ds {
			g.Names = append(g.Names, d.Name)
			if propose && d.Status == StatusNew && d.Name != dom {
				d.Entry, g.Proposed = "*."+dom, true
			}
		}
		sort.Strings(g.Names)
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Group) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

// countNew counts the new names in ds that *.dom would cover.
func countNew(ds []*Dest, dom string) int {
	n := 0
	for _, d := range ds {
		if d.Status == StatusNew && d.Name != dom {
			n++
		}
	}
	return n
}

// propose makes the policy: what is listed and used stays, what is new
// is added, in the order shown, each entry once.
func (s *Suggestion) propose(o Options) error {
	p := policy.Policy{Mode: policy.ModeAllowlist, Deny: slices.Clone(s.Current.Deny), HostPorts: slices.Clone(s.Current.HostPorts)}
	for _, e := range s.Current.Allow {
		if o.Prune && slices.Contains(s.Unused, e) {
			s.Removed = append(s.Removed, e)
			continue
		}
		p.Allow = append(p.Allow, e)
	}
	s.Added = []string{}
	for _, d := range append(slices.Clone(s.Names), s.Addrs...) {
		if d.Status != StatusNew || slices.Contains(p.Allow, d.Entry) {
			continue
		}
		if err := proposable(d, o); err != nil {
			return err
		}
		p.Allow = append(p.Allow, d.Entry)
		s.Added = append(s.Added, d.Entry)
	}
	if _, err := policy.Compile(p, netip.Addr{}, nil); err != nil {
		return fmt.Errorf("the proposed policy does not compile: %w", err)
	}
	s.Policy = p
	return nil
}

// proposable checks, once more and on its own, an entry about to be
// proposed: a name that passed nameProblem (or with Group a *. over a
// registrable domain), or one public address. It stands between the log
// and the policy should a change elsewhere let something through.
func proposable(d *Dest, o Options) error {
	e := d.Entry
	dom, prefix, err := policy.ParseEntry(e)
	switch {
	case err != nil:
		return fmt.Errorf("refused to propose %q: %w", e, err)
	case prefix.IsValid():
		if prefix.Bits() != prefix.Addr().BitLen() {
			return fmt.Errorf("refused to propose %s: a range, not one address", e)
		}
		if _, ok := policy.Reserved(prefix.Addr()); ok {
			return fmt.Errorf("refused to propose %s: a private address", e)
		}
		return nil
	}
	name := dom
	if rest, ok := strings.CutPrefix(dom, "*."); ok {
		reg, err := publicsuffix.EffectiveTLDPlusOne(rest)
		if !o.Group || err != nil || reg != rest {
			return fmt.Errorf("refused to propose %q: a wildcard", e)
		}
		name = rest
	}
	if why := nameProblem(name); why != "" || dom != e {
		return fmt.Errorf("refused to propose %q: %s", e, why)
	}
	return nil
}

func mapValues(m map[string]*Dest) []*Dest {
	out := make([]*Dest, 0, len(m))
	for _, d := range m {
		out = append(out, d)
	}
	return out
}
