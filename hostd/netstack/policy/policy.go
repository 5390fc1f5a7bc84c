// Package policy decides which of the guest's DNS queries and connections
// may leave the machine. It is pure: the DNS server, the forwarders and the
// proxy all ask it, and it remembers which names resolved to which
// addresses so that a name's permission covers only the addresses its
// allowed answers returned.
//
// Evaluation, first match wins:
//  1. the host's loopback, at 192.168.127.254: only the exposed ports;
//  2. the user's deny list (domains and CIDRs): denied;
//  3. the built-in private ranges (the host's LANs, RFC 1918, CGNAT, ULA,
//     link-local with the metadata address, multicast, loopback, the guest
//     subnet): denied, unless the user allowed that CIDR explicitly;
//  4. the user's allow list (domains through their DNS answers, CIDRs): allowed;
//  5. the mode: "default" allows the rest of the internet, "allowlist"
//     denies it.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Modes.
const (
	ModeDefault   = "default"   // the internet yes, private networks no
	ModeAllowlist = "allowlist" // only what is listed
)

// Policy is what the user sets, kept in the instance config.
type Policy struct {
	Mode string `json:"mode,omitempty"`
	// Allow and Deny hold domains (example.com, *.example.com), IP
	// addresses and CIDRs.
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
	// HostPorts are ports of the host's loopback the guest may reach, at
	// HostIP (host.cowork.internal) on the same port.
	HostPorts []int `json:"host_ports,omitempty"`
}

// Verdict is a decision and the rule that made it, for the audit log.
type Verdict struct {
	Allow bool
	Rule  string
}

func allow(rule string) Verdict { return Verdict{Allow: true, Rule: rule} }
func deny(rule string) Verdict  { return Verdict{Allow: false, Rule: rule} }

// Builtin are the ranges denied unless allowed by CIDR, with their names.
var Builtin = []struct {
	Prefix netip.Prefix
	Name   string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "rfc1918"},
	{netip.MustParsePrefix("172.16.0.0/12"), "rfc1918"},
	{netip.MustParsePrefix("192.168.0.0/16"), "rfc1918"},
	{netip.MustParsePrefix("100.64.0.0/10"), "cgnat"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"}, // 169.254.169.254 included
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fc00::/7"), "ula"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // 255.255.255.255 included
}

// Rules is a compiled Policy, safe for concurrent use.
type Rules struct {
	mode         string
	allowDomains []string
	denyDomains  []string
	allowNets    []netip.Prefix
	denyNets     []netip.Prefix
	hostPorts    map[uint16]bool
	hostIP       netip.Addr
	lans         []netip.Prefix
}

// Compile checks p and prepares it. hostIP is where the host's loopback
// appears to the guest; lans are the host's own subnets, denied like the
// private ranges.
func Compile(p Policy, hostIP netip.Addr, lans []netip.Prefix) (*Rules, error) {
	r := &Rules{mode: p.Mode, hostPorts: map[uint16]bool{}, hostIP: hostIP, lans: lans}
	if r.mode == "" {
		r.mode = ModeDefault
	}
	var errs []error
	if r.mode != ModeDefault && r.mode != ModeAllowlist {
		errs = append(errs, fmt.Errorf("network mode %q: want %s or %s", p.Mode, ModeDefault, ModeAllowlist))
	}
	for _, e := range p.Allow {
		d, n, err := ParseEntry(e)
		if err != nil {
			errs = append(errs, err)
		} else if d != "" {
			r.allowDomains = append(r.allowDomains, d)
		} else {
			r.allowNets = append(r.allowNets, n)
		}
	}
	for _, e := range p.Deny {
		d, n, err := ParseEntry(e)
		if err != nil {
			errs = append(errs, err)
		} else if d != "" {
			r.denyDomains = append(r.denyDomains, d)
		} else {
			r.denyNets = append(r.denyNets, n)
		}
	}
	for _, port := range p.HostPorts {
		if port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("host port %d: want 1 to 65535", port))
			continue
		}
		r.hostPorts[uint16(port)] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// ParseEntry reads one allow or deny entry: a domain (returned normalized,
// lower case without the final dot), or an address or CIDR (returned as a
// prefix).
func ParseEntry(e string) (domain string, prefix netip.Prefix, err error) {
	s := strings.TrimSpace(e)
	if p, err := netip.ParsePrefix(s); err == nil {
		return "", p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return "", netip.PrefixFrom(a, a.BitLen()), nil
	}
	d := normalize(s)
	rest := strings.TrimPrefix(d, "*.")
	if rest == "" || strings.Contains(rest, "*") || !validName(rest) {
		return "", netip.Prefix{}, fmt.Errorf("%q is neither a domain (example.com, *.example.com) nor an address or CIDR", e)
	}
	return d, netip.Prefix{}, nil
}

func normalize(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

func validName(n string) bool {
	if len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// matchDomain reports whether name matches a pattern: "example.com" is
// that name only, "*.example.com" any name under it.
func matchDomain(pattern, name string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(name, "."+suffix)
	}
	return name == pattern
}

func firstMatch(patterns []string, name string) (string, bool) {
	for _, p := range patterns {
		if matchDomain(p, name) {
			return p, true
		}
	}
	return "", false
}

func netMatch(nets []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, n := range nets {
		if n.Contains(a) {
			return n, true
		}
	}
	return netip.Prefix{}, false
}

// Mode is the compiled mode.
func (r *Rules) Mode() string { return r.mode }

// CheckName decides a DNS query: denied names are not resolved, and in
// allowlist mode neither is anything unlisted (a query to an attacker's
// name server is itself a way out).
func (r *Rules) CheckName(name string) Verdict {
	name = normalize(name)
	if p, ok := firstMatch(r.denyDomains, name); ok {
		return deny("deny " + p)
	}
	if p, ok := firstMatch(r.allowDomains, name); ok {
		return allow("allow " + p)
	}
	if r.mode == ModeAllowlist {
		return deny("allowlist: " + name + " is not listed")
	}
	return allow("default")
}

// CheckFlow decides a connection to dst. names are the names the guest
// resolved dst from (see Bindings), empty for an IP literal.
func (r *Rules) CheckFlow(dst netip.AddrPort, names []string) Verdict {
	a := dst.Addr().Unmap()
	if a == r.hostIP {
		if r.hostPorts[dst.Port()] {
			return allow(fmt.Sprintf("host port %d", dst.Port()))
		}
		return deny(fmt.Sprintf("host port %d is not exposed", dst.Port()))
	}
	if n, ok := netMatch(r.denyNets, a); ok {
		return deny("deny " + n.String())
	}
	for _, name := range names {
		if p, ok := firstMatch(r.denyDomains, name); ok {
			return deny("deny " + p)
		}
	}
	allowedNet, explicit := netMatch(r.allowNets, a)
	if !explicit {
		for _, b := range Builtin {
			if b.Prefix.Contains(a) {
				return deny("private: " + b.Name + " " + b.Prefix.String())
			}
		}
		if n, ok := netMatch(r.lans, a); ok {
			return deny("private: host LAN " + n.String())
		}
	}
	if explicit {
		return allow("allow " + allowedNet.String())
	}
	for _, name := range names {
		if p, ok := firstMatch(r.allowDomains, name); ok {
			return allow("allow " + p)
		}
	}
	if r.mode == ModeAllowlist {
		if len(names) == 0 {
			return deny("allowlist: " + a.String() + " is not listed")
		}
		return deny("allowlist: " + names[0] + " is not listed")
	}
	return allow("default")
}

// Describe lists the policy's rules as lines, for `cowork policy`.
func (p Policy) Describe() []string {
	mode := p.Mode
	if mode == "" {
		mode = ModeDefault
	}
	lines := []string{"mode: " + mode}
	for _, e := range p.Allow {
		lines = append(lines, "allow "+e)
	}
	for _, e := range p.Deny {
		lines = append(lines, "deny "+e)
	}
	ports := slices.Clone(p.HostPorts)
	slices.Sort(ports)
	for _, port := range ports {
		lines = append(lines, fmt.Sprintf("host port %d", port))
	}
	return lines
}
