package netstack

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Host-held secrets (cowork secret): the guest's environment holds a
// placeholder for each; the stack terminates the guest's TLS to the
// secret's host (see intercept.go) and, in the place the secret names (an
// Authorization header, or a header of its own), replaces the placeholder
// with the value on the way to that host alone, over TLS verified for
// that host. A placeholder sent anywhere else stays a placeholder, and the
// audit line says so.

// How a secret is carried in a request: where the guest puts its
// placeholder, and so the only place the stack replaces it.
const (
	// SecretAuthorization: the Authorization header, any scheme (a Basic
	// password, a Bearer or a "token" credential).
	SecretAuthorization = "authorization"
	SecretBearer        = "bearer" // Authorization: Bearer PLACEHOLDER
	SecretBasic         = "basic"  // the password of Authorization: Basic
	SecretHeader        = "header" // the header Secret.Header names
)

// PlaceholderPrefix starts every secret's placeholder, so that one is
// recognizable in the guest and in a log.
const PlaceholderPrefix = "cowork-secret-"

// NewPlaceholder makes a secret's placeholder: what the guest is given in
// its place, unguessable, so that it names this secret of this instance
// alone.
func NewPlaceholder() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return PlaceholderPrefix + hex.EncodeToString(b)
}

// MaxSecrets bounds an instance's secrets.
const MaxSecrets = 32

// A value's bounds: a token, a password.
const (
	minSecretValue = 8
	maxSecretValue = 16 << 10
)

// reservedNames are variables the guest's programs need for themselves, or
// that cowork sets for the secrets (secretEnv, the CA's variables): a
// secret named so would never reach a command, or would break them.
var reservedNames = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "PWD", "OLDPWD", "HOSTNAME", "TZ",
	"TMPDIR", "MAIL", "ENV", "BASH_ENV", "IFS", "PS1", "PS4", "PROMPT_COMMAND", "SSH_AUTH_SOCK", "NODE_EXTRA_CA_CERTS",
	"NODE_OPTIONS", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}

// reservedPrefixes are whole families of such variables.
var reservedPrefixes = []string{"LD_", "DYLD_", "GIT_", "COWORK_", "LC_", "XDG_", "ANTHROPIC_", "CLAUDE_", "NPM_CONFIG_"}

// checkSecretName refuses a name that is no variable, or one the guest
// needs (reservedNames).
func checkSecretName(name string) error {
	if !secretNameRE.MatchString(name) {
		return fmt.Errorf("secret name %q: use letters, digits and _, not starting with a digit (it is the guest's environment variable)", name)
	}
	up := strings.ToUpper(name)
	switch {
	case slices.Contains(reservedNames, up):
		return fmt.Errorf("secret name %s: the guest needs that variable for itself; choose another, such as %s_TOKEN", name, up)
	case slices.ContainsFunc(reservedPrefixes, func(p string) bool { return strings.HasPrefix(up, p) }):
		return fmt.Errorf("secret name %s: variables named so are read by the guest's programs; choose another, such as MY_%s", name, up)
	}
	return nil
}

// Secret is one credential the host holds for the guest.
type Secret struct {
	// Name is the guest's environment variable holding the placeholder,
	// and what the audit log names.
	Name string
	// Host is where the value may go: a host name, with ":port" when not
	// 443.
	Host string
	// Mode is one of the Secret* constants; Header names the header for
	// SecretHeader.
	Mode   string
	Header string
	// Placeholder is what the guest sees; Value what the host sends.
	Placeholder string
	Value       string
	// CA, when set, is PEM certificates trusted for Host besides the
	// host's own roots (a service behind a private CA).
	CA []byte
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// SecretHostKey puts host[:port] in the form the table is keyed by: a
// lower-case name and a port ("github.com:443"). It refuses what names no
// host: an address literal (the value would go to whatever answers
// there), a wildcard, a path.
func SecretHostKey(host string) (string, error) {
	if strings.Contains(host, "://") || strings.Contains(host, "/") {
		return "", fmt.Errorf("secret host %q: give the host's name, not a URL (such as github.com, or registry.example.com:8443)", host)
	}
	h, port := strings.ToLower(strings.TrimSpace(host)), "443"
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h, port = h[:i], h[i+1:]
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return "", fmt.Errorf("secret host %q: %q is no port", host, port)
		}
	}
	h = strings.TrimSuffix(h, ".")
	if cleanName(h) != h || strings.ContainsAny(h, ":_") || !strings.Contains(h, ".") && h != "localhost" {
		return "", fmt.Errorf("secret host %q: give a host name such as api.github.com (optionally with :PORT)", host)
	}
	if net.ParseIP(h) != nil {
		return "", fmt.Errorf("secret host %q: give the host's name, not an address: the value goes only where TLS proves that name", host)
	}
	return h + ":" + port, nil
}

// CheckSecret validates s as SetSecrets would, and returns it with its
// Host in key form and its Header canonical.
func CheckSecret(s Secret) (Secret, error) {
	err := s.check()
	return s, err
}

// check validates a secret; its Host is put in key form.
func (s *Secret) check() error {
	if err := checkSecretName(s.Name); err != nil {
		return err
	}
	key, err := SecretHostKey(s.Host)
	if err != nil {
		return err
	}
	s.Host = key
	switch s.Mode {
	case SecretAuthorization, SecretBearer, SecretBasic:
		if s.Header != "" {
			return fmt.Errorf("secret %s: a header name goes only with the header mode", s.Name)
		}
	case SecretHeader:
		if err := CheckSecretHeader(s.Header); err != nil {
			return fmt.Errorf("secret %s: %w", s.Name, err)
		}
		s.Header = http.CanonicalHeaderKey(s.Header)
	default:
		return fmt.Errorf("secret %s: unknown mode %q", s.Name, s.Mode)
	}
	if !strings.HasPrefix(s.Placeholder, PlaceholderPrefix) || len(s.Placeholder) < len(PlaceholderPrefix)+16 || !headerSafe(s.Placeholder) {
		return fmt.Errorf("secret %s: a malformed placeholder", s.Name)
	}
	if err := CheckSecretValue(s.Value); err != nil {
		return fmt.Errorf("secret %s: %w", s.Name, err)
	}
	if strings.Contains(s.Value, PlaceholderPrefix) {
		return fmt.Errorf("secret %s: the value is a placeholder", s.Name)
	}
	if len(s.CA) > 0 && !x509.NewCertPool().AppendCertsFromPEM(s.CA) {
		return fmt.Errorf("secret %s: its CA holds no certificate that can be read", s.Name)
	}
	return nil
}

// CheckSecretValue refuses a value no header can carry: empty, too long,
// or with a control character (a line break would add headers of the
// guest's choosing to the request).
func CheckSecretValue(v string) error {
	if len(v) < minSecretValue {
		return fmt.Errorf("the value is under %d characters: one that short could be guessed through a host that quotes requests back", minSecretValue)
	}
	if len(v) > maxSecretValue {
		return fmt.Errorf("the value is over %d KiB", maxSecretValue>>10)
	}
	if !headerSafe(v) {
		return fmt.Errorf("the value holds a control character (a line break?); give it without")
	}
	return nil
}

func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// CheckSecretHeader refuses a header a secret cannot be carried in: not a
// header name, or one that frames the request or routes it.
func CheckSecretHeader(h string) error {
	if h == "" || strings.IndexFunc(h, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c))
	}) >= 0 {
		return fmt.Errorf("%q is no header name", h)
	}
	switch http.CanonicalHeaderKey(h) {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer",
		"Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Cookie":
		return fmt.Errorf("the header %s cannot carry a secret", h)
	}
	return nil
}

// secretTable is the stack's secrets, by host key.
type secretTable struct {
	mu     sync.RWMutex
	gen    uint64 // counts SetSecrets
	all    []Secret
	byHost map[string][]Secret
	roots  map[string]*x509.CertPool // the roots a host's TLS is verified with, nil: the host's
}

// SetSecrets replaces the instance's secrets; an invalid one refuses the
// whole list, and the table stays as it was.
func (n *Stack) SetSecrets(list []Secret) error {
	if len(list) > MaxSecrets {
		return fmt.Errorf("%d secrets: at most %d", len(list), MaxSecrets)
	}
	all := slices.Clone(list)
	byHost := map[string][]Secret{}
	roots := map[string]*x509.CertPool{}
	seen := map[string]bool{}
	for i := range all {
		s := &all[i]
		if err := s.check(); err != nil {
			return err
		}
		if seen[s.Name] || seen[s.Placeholder] {
			return fmt.Errorf("secret %s: given twice, or its placeholder is another's", s.Name)
		}
		seen[s.Name], seen[s.Placeholder] = true, true
		if len(s.CA) > 0 {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(s.CA) {
				return fmt.Errorf("secret %s: its CA holds no PEM certificate", s.Name)
			}
			if roots[s.Host] != nil {
				roots[s.Host].AppendCertsFromPEM(s.CA)
			} else {
				roots[s.Host] = pool
			}
		}
		byHost[s.Host] = append(byHost[s.Host], *s)
	}
	t := &n.secrets
	t.mu.Lock()
	t.all, t.byHost, t.roots = all, byHost, roots
	t.gen++
	t.mu.Unlock()
	return nil
}

// any reports whether the table holds a secret at all.
func (t *secretTable) any() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.all) > 0
}

// has reports whether hostport (a name and a port) has secrets:
// the guest's TLS to it is then terminated here.
func (t *secretTable) has(hostport string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byHost[hostport]) > 0
}

// hostRoots is the pool hostport's certificate is verified with; nil
// means the host's roots.
func (t *secretTable) hostRoots(hostport string) *x509.CertPool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.roots[hostport]
}

// generation counts the tables set: a connection made under another is
// not reused.
func (t *secretTable) generation() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.gen
}

// values are the secret values, which no log line may carry.
func (t *secretTable) values() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, len(t.all))
	for i, s := range t.all {
		out[i] = s.Value
	}
	return out
}

// swap replaces, in h, the placeholders of hostport's secrets where each
// secret says it is carried, and returns the names of those replaced and
// of those whose placeholder is left as it came (for another host, or in
// another place): that one goes out as sent, a placeholder that is no
// secret. sent are the strings of the request that carry a value (each
// value, each header value it was put in, a Basic credential's base64):
// an answer quoting one of them is not shown to the guest (scrub).
func (t *secretTable) swap(h http.Header, hostport string) (used, withheld, sent []string) {
	t.mu.RLock()
	mine, all := t.byHost[hostport], t.all
	t.mu.RUnlock()
	for _, s := range mine {
		sent = append(sent, s.Value)
		if s.Mode == SecretHeader {
			for i, v := range h[s.Header] {
				// Once: a header of placeholders must not grow a
				// thousandfold in hostd's memory and on the wire.
				if strings.Count(v, s.Placeholder) == 1 {
					h[s.Header][i] = strings.Replace(v, s.Placeholder, s.Value, 1)
					sent = append(sent, h[s.Header][i])
					used = append(used, s.Name)
					break
				}
			}
			continue
		}
		for i, v := range h["Authorization"] {
			if nv, cred, ok := replaceAuthorization(v, s); ok {
				h["Authorization"][i] = nv
				sent = append(sent, nv, cred)
				used = append(used, s.Name)
				break
			}
		}
	}
	return used, placeholdersIn(h, all), sent
}

// replaceAuthorization replaces s's placeholder in an Authorization value
// of a scheme s allows: inside the decoded credentials of Basic, in the
// credential of any other. It returns the new value and its credential.
func replaceAuthorization(v string, s Secret) (string, string, bool) {
	scheme, cred, _ := strings.Cut(strings.TrimSpace(v), " ")
	cred = strings.TrimSpace(cred)
	basic := strings.EqualFold(scheme, "Basic")
	switch {
	case basic && (s.Mode == SecretBasic || s.Mode == SecretAuthorization):
		raw, err := base64.StdEncoding.DecodeString(cred)
		user, pass, ok := strings.Cut(string(raw), ":")
		if err != nil || !ok || pass != s.Placeholder {
			return v, "", false
		}
		enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + s.Value))
		return scheme + " " + enc, enc, true
	case basic:
		return v, "", false
	case s.Mode == SecretAuthorization || s.Mode == SecretBearer && strings.EqualFold(scheme, "Bearer"):
		if cred != s.Placeholder {
			return v, "", false
		}
		return scheme + " " + s.Value, s.Value, true
	}
	return v, "", false
}

// placeholdersIn names the secrets whose placeholder is still somewhere in
// h, the decoded credentials of a Basic Authorization included.
func placeholdersIn(h http.Header, all []Secret) []string {
	var names []string
	for _, s := range all {
		if headerHolds(h, s.Placeholder) {
			names = append(names, s.Name)
		}
	}
	return names
}

func headerHolds(h http.Header, placeholder string) bool {
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, placeholder) {
				return true
			}
			if k == "Authorization" {
				if scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " "); ok && strings.EqualFold(scheme, "Basic") {
					if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred)); err == nil && strings.Contains(string(raw), placeholder) {
						return true
					}
				}
			}
		}
	}
	return false
}

// withheld names the secrets whose placeholder is in h, a request to a
// host the stack does not hold them for (plain HTTP through the proxy).
func (t *secretTable) withheld(h http.Header) []string {
	t.mu.RLock()
	all := t.all
	t.mu.RUnlock()
	if len(all) == 0 {
		return nil
	}
	return placeholdersIn(h, all)
}

// scrub removes from an answer's header every field that quotes one of
// sent (swap's): a server that echoes the request (a debug endpoint, a
// redirect's URL) does not hand the guest a value that way. The field
// goes whole, so that where a value sat tells nothing either. A body that
// quotes a value is not scrubbed (see SECURITY.md).
func scrub(h map[string][]string, sent []string) {
	for k, vs := range h {
		for _, v := range vs {
			if slices.ContainsFunc(sent, func(x string) bool { return x != "" && strings.Contains(v, x) }) {
				delete(h, k)
				break
			}
		}
	}
}
