package netstack

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted stands in for a secret in logs, audit records and errors.
const redacted = "xxxxx"

// RedactURL is raw fit for a log line or an error: its user information
// (a proxy's or a gateway's user:password, or a token given as the user)
// and its query are replaced by xxxxx. A string that does not parse as a
// URL is left out whole, since it may hold a secret anywhere.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)"
	}
	if u.User != nil {
		u.User = url.User(redacted)
	}
	if u.RawQuery != "" {
		u.RawQuery = redacted
	}
	u.ForceQuery = false
	return u.String()
}

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
