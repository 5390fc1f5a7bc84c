package policy

import (
	"net/netip"
	"slices"
	"strconv"
)

// Step is one `cowork policy` command: Verb is allow, remove or expose.
type Step struct {
	Verb, Arg string
}

// Fix finds the `cowork policy` commands that would let a denied request
// through: name is the name asked for ("" for an IP literal), dst the
// address it went to (invalid when the name itself was refused), names
// what dst was resolved from. It tries each step on a copy of the policy
// and goes on until the request is allowed, so that what it suggests
// changes the outcome (removing a name from the deny list is not enough
// in allowlist mode; allowing an address does not open the host's
// loopback). nil means no policy change lets it through.
func (r *Rules) Fix(name string, proto Proto, dst netip.AddrPort, names []string) []Step {
	p := r.src
	p.Allow, p.Deny, p.HostPorts = slices.Clone(p.Allow), slices.Clone(p.Deny), slices.Clone(p.HostPorts)
	cur := r
	var steps []Step
	for range 8 {
		v := allow("")
		if name != "" {
			v = cur.CheckName(name)
		}
		if v.Allow && dst.IsValid() {
			v = cur.CheckFlow(proto, dst, names)
		}
		if v.Allow {
			return steps
		}
		s, ok := v.step(name, dst)
		if !ok {
			return nil
		}
		s.apply(&p)
		steps = append(steps, s)
		next, err := Compile(p, r.hostIP, nil)
		if err != nil {
			return nil
		}
		next.lans = r.lans
		cur = next
	}
	return nil
}

func (v Verdict) step(name string, dst netip.AddrPort) (Step, bool) {
	switch v.fix {
	case fixRemove:
		return Step{"remove", v.entry}, true
	case fixAllowAddr:
		if v.entry != "" {
			return Step{"allow", v.entry}, true
		}
		return Step{"allow", Canonical(dst.Addr()).String()}, true
	case fixAllowName:
		if name != "" {
			return Step{"allow", normalize(name)}, true
		}
		if dst.IsValid() {
			return Step{"allow", Canonical(dst.Addr()).String()}, true
		}
	case fixExpose:
		return Step{"expose", strconv.Itoa(int(dst.Port()))}, true
	}
	return Step{}, false
}

// apply does to p what the command does (see cmd/cowork/policycmd).
func (s Step) apply(p *Policy) {
	switch s.Verb {
	case "remove":
		p.Allow = slices.DeleteFunc(p.Allow, func(e string) bool { return e == s.Arg })
		p.Deny = slices.DeleteFunc(p.Deny, func(e string) bool { return e == s.Arg })
	case "allow":
		p.Allow = append(p.Allow, s.Arg)
	case "expose":
		port, _ := strconv.Atoi(s.Arg)
		p.HostPorts = append(p.HostPorts, port)
	}
}
