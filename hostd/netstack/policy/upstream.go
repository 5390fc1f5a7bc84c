package policy

import (
	"fmt"
	"net/url"
)

// DefaultMaxFlows is how many connections and UDP flows the guest may have
// open at once when its instance does not say.
const DefaultMaxFlows = 1024

// Redacted stands in for a secret in logs, audit records and errors.
const Redacted = "xxxxx"

// ParseUpstream checks an upstream proxy URL: http://host:port or
// socks5://host:port (socks5h too), with optional user:password. The
// error never shows the password.
func ParseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("upstream proxy %s: want http://HOST:PORT or socks5://HOST:PORT", RedactURL(raw))
	}
	switch u.Scheme {
	case "http", "socks5", "socks5h":
		return u, nil
	}
	return nil, fmt.Errorf("upstream proxy %s: scheme %q is not http or socks5", RedactURL(raw), u.Scheme)
}

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
		u.User = url.User(Redacted)
	}
	if u.RawQuery != "" {
		u.RawQuery = Redacted
	}
	u.ForceQuery = false
	return u.String()
}
