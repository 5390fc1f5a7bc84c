package policy

import "net/netip"

// Learning is r in learn mode: what the policy would refuse only because
// it is not listed (in allowlist mode) is allowed, with Verdict.Learn set,
// so that a task can run once and its
// audit log say what it needed (`cowork policy learn`). Everything the
// policy refuses on purpose stays refused, checked before the mode is: the
// host itself and its unexposed ports, the deny list, the host's LANs and
// the private, link-local and metadata ranges, and the IPv4 addresses an
// IPv6 address carries. Learn mode widens the mode step alone, so in
// default mode, which lets the internet through anyway, it changes no
// verdict and marks nothing: Learn always means "refused without learn
// mode" (and such flows end with it, see netstack.Stack.Learn).
//
// r itself is unchanged; the two share their compiled lists, which
// neither writes.
func (r *Rules) Learning() *Rules {
	c := *r
	c.learn = true
	return &c
}

// IsLearning reports whether r is in learn mode.
func (r *Rules) IsLearning() bool { return r.learn }

// learned is the verdict of learn mode for what is not listed.
func learned(what string) Verdict {
	return Verdict{Allow: true, Learn: true, Rule: "learn: " + what + " is not listed"}
}

// Reserved reports whether a is an address the policy refuses by design,
// and the rule that says so: the host itself, the built-in private,
// link-local, multicast and reserved ranges, an IPv6 address outside
// global unicast, and an IPv6 address that carries such an IPv4 address.
// It knows nothing of the host's LANs (hostd does). `cowork policy
// suggest` never proposes such an address, whatever the log says.
func Reserved(a netip.Addr) (rule string, ok bool) {
	var none Rules
	a = Canonical(a)
	if v, denied := none.checkAddr(a); denied {
		return v.Rule, true
	}
	var emb [3]EmbeddedV4
	for _, e := range emb[:Embedded(a, &emb)] {
		if v, denied := none.checkAddr(e.Addr); denied {
			return e.Kind + " " + a.String() + " carries " + e.Addr.String() + ": " + v.Rule, true
		}
	}
	return "", false
}

// Listed returns the allow entry, as written, that covers name (by a
// domain entry) or a (by an address or CIDR entry); either may be empty
// or invalid. It judges the lists alone, not the ranges or the mode.
func (r *Rules) Listed(name string, a netip.Addr) (entry string, ok bool) {
	return listed(r.allowDomains, r.allowNets, name, a)
}

// DeniedBy is Listed for the deny list.
func (r *Rules) DeniedBy(name string, a netip.Addr) (entry string, ok bool) {
	return listed(r.denyDomains, r.denyNets, name, a)
}

func listed(domains []domainEntry, nets []netEntry, name string, a netip.Addr) (string, bool) {
	if name != "" {
		if d, ok := firstMatch(domains, normalize(name)); ok {
			return d.entry, true
		}
	}
	if a.IsValid() {
		if n, ok := netMatch(nets, Canonical(a)); ok {
			return n.entry, true
		}
	}
	return "", false
}
