package suggest

import (
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// MaxName is the longest name a DNS message can carry (253 bytes without
// the final dot): anything longer in the log is not a name.
const MaxName = 253

// specialSuffixes are names that are no place on the internet: local
// networks, reverse lookups, reserved test names (RFC 6761, 6762, 8375).
// A guest asks for them all the time (search domains, mDNS, PTR); a
// policy entry for one would only ever match what the gateway resolves
// locally, or nothing.
var specialSuffixes = []string{
	"local", "internal", "localhost", "localdomain", "lan", "home", "corp",
	"arpa", "test", "invalid", "example", "onion", "alt",
}

// nameProblem says why a name from the audit log may not become a policy
// entry; "" when it may. The name comes from the guest (what it resolved,
// or asked the proxy for), so it is hostile: it must be a plain DNS name,
// in the one spelling ParseEntry gives back unchanged, that can only ever
// match itself. Anything that could change what an entry means (a
// wildcard, an address range, a list separator, a line break that starts
// a rule of its own) or could fool the eye (control and bidi characters,
// non-ASCII look-alikes) is refused here, before it is counted.
func nameProblem(s string) string {
	switch {
	case len(s) > MaxName+1:
		return "longer than a DNS name can be"
	case !utf8.ValidString(s):
		return "not UTF-8"
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "holds control characters"
	case strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 }):
		return "not ASCII (a name goes into a policy in its xn-- form)"
	case strings.Contains(s, "*"):
		return "a wildcard: a policy entry is proposed for names seen, never a pattern"
	case strings.ContainsAny(s, " ,;/#\"'`\\=:[]()<>{}|!$&"):
		return "not a DNS name: it holds a separator or punctuation"
	}
	n := strings.TrimSuffix(strings.ToLower(s), ".")
	if _, err := netip.ParsePrefix(n); err == nil {
		return "an address range, not a name"
	}
	d, p, err := policy.ParseEntry(n)
	if err != nil || p.IsValid() || d != n {
		return "not a DNS name (letters, digits, - and _ in labels between dots)"
	}
	labels := strings.Split(n, ".")
	if len(labels) < 2 {
		return "a single label: a local or search-domain name"
	}
	for _, l := range labels {
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "not a DNS name: a label starts or ends with -"
		}
	}
	tld := labels[len(labels)-1]
	if strings.Trim(tld, "0123456789") == "" || strings.HasPrefix(tld, "0x") {
		return "its last label is a number: an address in another spelling"
	}
	for _, suf := range specialSuffixes {
		if tld == suf {
			return "a local or special-use name (." + suf + ")"
		}
	}
	return ""
}

// clipName is a rejected name as kept in a Suggestion: at most 128 bytes
// of it (the rest counted), so that a hostile log cannot fill the output.
func clipName(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
