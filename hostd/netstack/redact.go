package netstack

import (
	"regexp"
	"strings"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// redacted stands in for a secret in logs, audit records and errors.
const redacted = policy.Redacted

// userinfoRE finds the user information of URLs in free text, such as the
// URL a *url.Error quotes.
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s"']*@`)

// redactText removes from s each secret and the user information of every
// URL it quotes, for an error that goes to a log, the audit log or the
// guest.
func redactText(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return userinfoRE.ReplaceAllString(s, "${1}"+redacted+"@")
}
