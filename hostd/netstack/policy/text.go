package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxText bounds a policy read by ParseText: far more than any policy a
// person writes (a few thousand entries), and a file that is not one is
// refused before it is read whole.
const MaxText = 1 << 20

// ParseText reads a policy written as Describe writes it, one rule a line:
//
//	mode: allowlist
//	allow api.anthropic.com
//	deny 203.0.113.0/24
//	host port 5432
//
// Blank lines and lines starting with # are skipped (what `cowork policy
// suggest` prints is such a file: its table is comments). Every entry is
// checked as Compile checks it; the error names each bad line. A rule
// given twice counts once. Without a mode line the mode is the default.
func ParseText(text string) (Policy, error) {
	var p Policy
	if len(text) > MaxText {
		return p, fmt.Errorf("the policy is over %d KiB; a policy is one rule a line", MaxText>>10)
	}
	var errs []error
	modeLine := 0
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		verb, arg, _ := strings.Cut(line, " ")
		arg = strings.TrimSpace(arg)
		switch {
		case verb == "mode:":
			if modeLine != 0 {
				errs = append(errs, fmt.Errorf("line %d: a second mode (line %d has one)", n, modeLine))
				continue
			}
			if arg != ModeDefault && arg != ModeAllowlist {
				errs = append(errs, fmt.Errorf("line %d: mode %q: want %s or %s", n, clipQuote(arg), ModeDefault, ModeAllowlist))
				continue
			}
			p.Mode, modeLine = arg, n
		case verb == "allow" || verb == "deny":
			if _, _, err := ParseEntry(arg); err != nil || strings.ContainsAny(arg, " \t") {
				errs = append(errs, fmt.Errorf("line %d: %q is neither a domain (example.com, *.example.com) nor an address or CIDR", n, clipQuote(arg)))
				continue
			}
			list := &p.Allow
			if verb == "deny" {
				list = &p.Deny
			}
			if !slices.Contains(*list, arg) {
				*list = append(*list, arg)
			}
		case verb == "host" && strings.HasPrefix(arg, "port "):
			port, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(arg, "port ")))
			if err != nil || port < 1 || port > 65535 {
				errs = append(errs, fmt.Errorf("line %d: %q: want host port 1 to 65535", n, clipQuote(line)))
				continue
			}
			if !slices.Contains(p.HostPorts, port) {
				p.HostPorts = append(p.HostPorts, port)
			}
		default:
			errs = append(errs, fmt.Errorf("line %d: %q is not a rule: want mode:, allow, deny or host port (# starts a comment)", n, clipQuote(line)))
		}
		if len(errs) >= 10 {
			errs = append(errs, errors.New("... and maybe more; stopped at 10 errors"))
			break
		}
	}
	return p, errors.Join(errs...)
}

// clipQuote shortens s for an error message; %q does the escaping.
func clipQuote(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
