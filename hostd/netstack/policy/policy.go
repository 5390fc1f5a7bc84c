// Package policy decides which of the guest's DNS queries and connections
// may leave the machine. It is pure: the DNS server, the forwarders and the
// proxy all ask it, and it remembers which names resolved to which
// addresses so that a name's permission covers only the addresses its
// allowed answers returned.
//
// Every address is judged in one canonical form (Canonical), and an IPv6
// address also by the IPv4 addresses it carries (Embedded), so that no
// spelling of the host's loopback or of a private address gets through.
//
// Evaluation of a flow, first match wins:
//  1. the host's loopback, at 192.168.127.254: only the exposed TCP ports;
//  2. the host itself (loopback, 0.0.0.0, ::): denied, whatever the lists say;
//  3. the user's deny list (domains and CIDRs): denied;
//  4. the host's LANs and the built-in private ranges (RFC 1918, CGNAT,
//     ULA, link-local with the metadata address, multicast, reserved, the
//     IPv6 ranges that are not global): denied, unless an allow entry
//     covers the address explicitly;
//  5. the IPv4 addresses inside a 6to4, Teredo, ISATAP or local NAT64
//     address: judged by 2 to 4;
//  6. the user's allow list (domains through their DNS answers, CIDRs): allowed;
//  7. the mode: "default" allows the rest of the internet, "allowlist"
//     denies it.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"

	"github.com/coworkhq/cowork/hostd/netstack/budget"
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
	// Budget limits what the instance's API sessions may spend in a day.
	Budget *Budget `json:"budget,omitempty"`
}

// Budget is what an instance's Claude Code may spend on the API in a UTC
// day, through the relay: tokens of every kind (input, output, cache
// writes and reads), US dollars at cowork's price table, or both. Zero is
// no limit. Once it is reached the relay refuses the day's next requests
// (see hostd/netstack/budget).
type Budget struct {
	DailyTokens  int64   `json:"daily_tokens,omitempty"`
	DailyCostUSD float64 `json:"daily_cost_usd,omitempty"`
}

// DailyBudget is the policy's daily budget as a limit (zero: none).
func (p Policy) DailyBudget() budget.Limit {
	if p.Budget == nil {
		return budget.Limit{}
	}
	return budget.Limit{Tokens: p.Budget.DailyTokens, CostUSD: p.Budget.DailyCostUSD}
}

// Proto is a flow's transport protocol: a host port is exposed for TCP
// only, so the policy must know which one a flow uses.
type Proto uint8

// Protocols.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// Verdict is a decision and the rule that made it, for the audit log.
type Verdict struct {
	Allow bool
	Rule  string
	// Learn marks an allow that only learn mode gave (see Learning): the
	// policy does not list the destination. The audit line carries it, so
	// that the log never reads as if the policy had allowed it.
	Learn bool

	// What lifts this denial, for Fix; set without allocating.
	fix   fixKind
	entry string // the deny entry as written, for fixRemove
}

type fixKind uint8

const (
	fixNone       fixKind = iota // nothing in the policy opens it
	fixRemove                    // take entry off the deny list
	fixAllowAddr                 // allow the address explicitly
	fixAllowName                 // allow the name (or the address when there is none)
	fixExpose                    // expose the host port
	fixHostItself                // nothing: the address is the host itself
)

// HostItself reports a denial because the address is the host itself
// (its loopback, or an unspecified address): no allow entry opens it; a
// service there is reached through an exposed port.
func (v Verdict) HostItself() bool { return !v.Allow && v.fix == fixHostItself }

func allow(rule string) Verdict { return Verdict{Allow: true, Rule: rule} }
func deny(rule string, fix fixKind) Verdict {
	return Verdict{Rule: rule, fix: fix}
}

type domainEntry struct {
	pattern string // normalized
	entry   string // as written
	rule    string
}

type netEntry struct {
	prefix netip.Prefix // canonical
	entry  string       // as written
	rule   string
}

// Rules is a compiled Policy, safe for concurrent use.
type Rules struct {
	src          Policy
	mode         string
	allowDomains []domainEntry
	denyDomains  []domainEntry
	allowNets    []netEntry
	denyNets     []netEntry
	hostPorts    map[uint16]string // exposed port -> its rule
	hostIP       netip.Addr
	lans         []special
	learn        bool // see Learning
}

// compileEntries parses the entries of one list (verb: allow or deny)
// into its domains and its networks, each with the rule it reports;
// what does not parse is added to errs.
func compileEntries(verb string, entries []string, errs []error) ([]domainEntry, []netEntry, []error) {
	var domains []domainEntry
	var nets []netEntry
	for _, e := range entries {
		d, n, err := ParseEntry(e)
		switch {
		case err != nil:
			errs = append(errs, err)
		case d != "":
			domains = append(domains, domainEntry{d, e, verb + " " + d})
		default:
			nets = append(nets, netEntry{n, e, verb + " " + n.String()})
		}
	}
	return domains, nets, errs
}

// Compile checks p and prepares it. hostIP is where the host's loopback
// appears to the guest; lans are the host's own subnets, denied like the
// private ranges.
func Compile(p Policy, hostIP netip.Addr, lans []netip.Prefix) (*Rules, error) {
	r := &Rules{src: p, mode: p.Mode, hostPorts: map[uint16]string{}, hostIP: hostIP}
	if r.mode == "" {
		r.mode = ModeDefault
	}
	for _, l := range lans {
		l = canonicalPrefix(l)
		r.lans = append(r.lans, special{l, "private: host LAN " + l.String()})
	}
	var errs []error
	if r.mode != ModeDefault && r.mode != ModeAllowlist {
		errs = append(errs, fmt.Errorf("network mode %q: want %s or %s", p.Mode, ModeDefault, ModeAllowlist))
	}
	r.allowDomains, r.allowNets, errs = compileEntries("allow", p.Allow, errs)
	r.denyDomains, r.denyNets, errs = compileEntries("deny", p.Deny, errs)
	if err := p.DailyBudget().Check("budget daily_tokens", "budget daily_cost_usd"); err != nil {
		errs = append(errs, err)
	}
	for _, port := range p.HostPorts {
		if port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("host port %d: want 1 to 65535", port))
			continue
		}
		r.hostPorts[uint16(port)] = fmt.Sprintf("host port %d", port)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// ParseEntry reads one allow or deny entry: a domain (returned normalized,
// lower case without the final dot), or an address or CIDR (returned as a
// prefix, in canonical form: ::ffff:10.0.0.1 is 10.0.0.1/32). An entry
// with white space around it or a control character in it is refused,
// not trimmed: it would be saved and shown as written, and on a terminal
// "\r0.0.0.0/0" reads as something else.
func ParseEntry(e string) (domain string, prefix netip.Prefix, err error) {
	s := e
	if s != strings.TrimSpace(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return "", netip.Prefix{}, fmt.Errorf("%q has white space around it or a control character in it: an entry is a domain, an address or a CIDR alone", e)
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return "", canonicalPrefix(p.Masked()), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.WithZone("")
		return "", canonicalPrefix(netip.PrefixFrom(a, a.BitLen())), nil
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
//
// A name with an escape in it (the DNS library writes a label's dot, and
// any byte outside the hostname alphabet, as \. or \DDD) is compared
// label by label, its escapes decoded: "foo\.allowed.com" is the label
// "foo.allowed" under com, not a name under allowed.com, and its text
// must not pass for one; "x\.y.denied.com" is a name under denied.com
// (its name servers answer it), and a deny entry for it must hold.
func matchDomain(pattern, name string) bool {
	if strings.ContainsRune(name, '\\') {
		return matchLabels(pattern, name)
	}
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return len(name) > len(suffix)+1 && strings.HasSuffix(name, suffix) && name[len(name)-len(suffix)-1] == '.'
	}
	return name == pattern
}

// matchLabels is matchDomain for a name with escapes: its labels, split
// at its unescaped dots and decoded, against the pattern's. A name whose
// escapes are cut short (a final lone \) matches nothing: no DNS message
// holds it.
func matchLabels(pattern, name string) bool {
	labels, ok := decodeLabels(name)
	if !ok {
		return false
	}
	suffix, wild := strings.CutPrefix(pattern, "*.")
	want := strings.Split(suffix, ".")
	if wild && len(labels) <= len(want) || !wild && len(labels) != len(want) {
		return false
	}
	for i, l := range labels[len(labels)-len(want):] {
		// ASCII case only, as DNS compares: strings.EqualFold would take
		// the Kelvin sign for a k.
		if len(l) != len(want[i]) {
			return false
		}
		for j := range len(l) {
			c := l[j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != want[i][j] {
				return false
			}
		}
	}
	return true
}

// decodeLabels splits a name in presentation form into its labels, each
// with its escapes (\X, \DDD) decoded into the bytes they stand for. A
// final unescaped dot ends the name, adding no label.
func decodeLabels(name string) ([]string, bool) {
	var labels []string
	var cur []byte
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '\\' && i+3 < len(name) && digit(name[i+1]) && digit(name[i+2]) && digit(name[i+3]):
			v := int(name[i+1]-'0')*100 + int(name[i+2]-'0')*10 + int(name[i+3]-'0')
			if v > 255 {
				return nil, false
			}
			cur = append(cur, byte(v))
			i += 3
		case c == '\\' && i+1 < len(name):
			cur = append(cur, name[i+1])
			i++
		case c == '\\':
			return nil, false
		case c == '.':
			labels = append(labels, string(cur))
			cur = cur[:0]
		default:
			cur = append(cur, c)
		}
	}
	if len(cur) > 0 || len(labels) == 0 {
		labels = append(labels, string(cur))
	}
	return labels, true
}

func firstMatch(list []domainEntry, name string) (*domainEntry, bool) {
	for i := range list {
		if matchDomain(list[i].pattern, name) {
			return &list[i], true
		}
	}
	return nil, false
}

func netMatch(list []netEntry, a netip.Addr) (*netEntry, bool) {
	for i := range list {
		if list[i].prefix.Contains(a) {
			return &list[i], true
		}
	}
	return nil, false
}

// Mode is the compiled mode.
func (r *Rules) Mode() string { return r.mode }

// CheckName decides a DNS query: denied names are not resolved, and in
// allowlist mode neither is anything unlisted (a query to an attacker's
// name server is itself a way out).
func (r *Rules) CheckName(name string) Verdict {
	name = normalize(name)
	if d, ok := firstMatch(r.denyDomains, name); ok {
		return Verdict{Rule: d.rule, fix: fixRemove, entry: d.entry}
	}
	if d, ok := firstMatch(r.allowDomains, name); ok {
		return allow(d.rule)
	}
	if r.mode == ModeAllowlist {
		if r.learn {
			return learned(name)
		}
		return deny("allowlist: "+name+" is not listed", fixAllowName)
	}
	return allow("default")
}

// CheckFlow decides a connection to dst over proto. names are the names
// the guest resolved dst from (see Bindings), empty for an IP literal.
// dst is judged in its canonical form (Canonical), and an IPv6 address is
// also judged by every IPv4 address it carries (Embedded): the caller must
// dial CanonicalPort(dst), the address judged, and nothing else.
//
// Evaluation, first match wins: the host address (exposed TCP ports
// only); the host itself (loopback, unspecified: never); the deny list;
// the host's LANs and the built-in private ranges, unless an allow entry
// covers the address; the IPv4 addresses an IPv6 address carries, judged
// the same way; the allow list; the mode.
func (r *Rules) CheckFlow(proto Proto, dst netip.AddrPort, names []string) Verdict {
	a := Canonical(dst.Addr())
	if a == r.hostIP {
		if rule, ok := r.hostPorts[dst.Port()]; ok && proto == TCP {
			return allow(rule)
		}
		if proto != TCP {
			return deny(fmt.Sprintf("host port %d: only TCP ports are exposed", dst.Port()), fixNone)
		}
		return deny(fmt.Sprintf("host port %d is not exposed", dst.Port()), fixExpose)
	}
	if v, denied := r.checkAddr(a); denied {
		return v
	}
	for _, name := range names {
		if d, ok := firstMatch(r.denyDomains, name); ok {
			return Verdict{Rule: d.rule, fix: fixRemove, entry: d.entry}
		}
	}
	if a.Is6() {
		var emb [3]EmbeddedV4
		for _, e := range emb[:Embedded(a, &emb)] {
			if v, denied := r.checkAddr(e.Addr); denied {
				v.Rule = fmt.Sprintf("%s %s carries %s: %s", e.Kind, a, e.Addr, v.Rule)
				if v.fix == fixAllowAddr {
					v.entry = e.Addr.String()
				}
				return v
			}
		}
	}
	if n, ok := netMatch(r.allowNets, a); ok {
		return allow(n.rule)
	}
	for _, name := range names {
		if d, ok := firstMatch(r.allowDomains, name); ok {
			return allow(d.rule)
		}
	}
	if r.mode == ModeAllowlist {
		what := a.String()
		if len(names) > 0 {
			what = names[0]
		}
		if r.learn {
			return learned(what)
		}
		return deny("allowlist: "+what+" is not listed", fixAllowName)
	}
	return allow("default")
}

// checkAddr judges an address on its own (canonical): the host itself,
// the deny list, and the private ranges an explicit allow entry has not
// opened. It says nothing of an address it does not deny.
func (r *Rules) checkAddr(a netip.Addr) (Verdict, bool) {
	if rule, ok := match(hostSelf(), a); ok {
		return deny(rule, fixHostItself), true
	}
	if n, ok := netMatch(r.denyNets, a); ok {
		return Verdict{Rule: n.rule, fix: fixRemove, entry: n.entry}, true
	}
	if _, ok := netMatch(r.allowNets, a); ok {
		return Verdict{}, false
	}
	if rule, ok := match(r.lans, a); ok {
		return deny(rule, fixAllowAddr), true
	}
	if rule, ok := match(builtin(), a); ok {
		return deny(rule, fixAllowAddr), true
	}
	if a.Is6() && !globalUnicast.Contains(a) {
		return deny(ruleNotGlobal, fixAllowAddr), true
	}
	return Verdict{}, false
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
	if b := p.DailyBudget(); b.Tokens > 0 {
		lines = append(lines, fmt.Sprintf("budget %s tokens a day", budget.Tokens(b.Tokens)))
	}
	if b := p.DailyBudget(); b.CostUSD > 0 {
		lines = append(lines, fmt.Sprintf("budget %s a day", budget.USD(b.CostUSD)))
	}
	return lines
}
