package netstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// The calls the relay forwards are the ones the pinned Claude Code makes
// on ANTHROPIC_BASE_URL (run against internal/fakeapi, with tools, -c,
// --model and /context): POST /v1/messages and POST
// /v1/messages/count_tokens, each with ?beta=true. GET /v1/models (and one
// model) is its model discovery for gateways: read-only and free, so it
// passes too. HEAD or GET /api/hello, its connection warm-up and
// reachability probe, carries no credential and is answered by the relay
// itself. Everything else (the Files, Batches, Admin or OAuth APIs the
// bundled SDK knows) is refused with a 404 and audited.
var relayCalls = map[string]string{
	"/v1/messages":              http.MethodPost,
	"/v1/messages/count_tokens": http.MethodPost,
	"/v1/models":                http.MethodGet,
}

var modelPathRE = regexp.MustCompile(`^/v1/models/[A-Za-z0-9._:@-]{1,128}$`)

// RouteRefused is the audit rule of a request for a call the relay does
// not forward.
const RouteRefused = "relay: not an API call Claude Code makes"

// relayCall checks a request against the calls the relay forwards and
// returns its path as the relay will send it (decoded, without a
// percent-encoded spelling of its own).
func relayCall(r *http.Request) (string, bool) {
	if r.Header.Get("Upgrade") != "" || headerHasToken(r.Header, "Connection", "upgrade") {
		return "", false // no protocol switch: a raw tunnel would carry anything
	}
	p := r.URL.Path
	if m, ok := relayCalls[p]; ok && m == r.Method {
		return p, true
	}
	if r.Method == http.MethodGet && modelPathRE.MatchString(p) {
		return p, true
	}
	return "", false
}

// isHello is Claude Code's reachability probe of its base URL.
func isHello(r *http.Request) bool {
	return r.URL.Path == "/api/hello" && (r.Method == http.MethodHead || r.Method == http.MethodGet)
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// credentialWords mark a header that may carry a credential: x-api-key,
// Authorization, Proxy-Authorization, Cookie, and Anthropic's own
// anthropic-api-key, anthropic-admin-api-key, anthropic-oauth-token or
// anthropic-signed-key-rest among the ones the pinned Claude Code knows.
// None of the headers it sends to the Messages API (anthropic-version,
// anthropic-beta, x-app, x-claude-code-session-id, x-stainless-*...) has
// one of these words in its name.
var credentialWords = []string{"auth", "key", "token", "cookie", "secret", "credential", "password", "signature"}

// stripCredentials drops every request header that may carry a credential
// the guest sent, before the relay adds the real one.
func stripCredentials(h http.Header) {
	for name := range h {
		lower := strings.ToLower(name)
		for _, w := range credentialWords {
			if strings.Contains(lower, w) {
				delete(h, name)
				break
			}
		}
	}
}

// writeAPIError answers in the Messages API's error shape, which Claude
// Code shows to its user.
func writeAPIError(w http.ResponseWriter, status int, typ, msg string) {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// refusalMessage is what the guest's client is told about its credential.
func refusalMessage(why Refusal) string {
	switch why {
	case Ended:
		return "cowork relay: this session has ended (the cowork command that started it is over); run the command again through cowork"
	case Expired:
		return fmt.Sprintf("cowork relay: this session reached its ceiling of %s; run the command again through cowork", MaxSessionTTL)
	case NoCredential:
		return "cowork relay: the request carries no session credential; run the command through cowork"
	}
	return "cowork relay: unknown session credential; run the command again through cowork"
}

// clip bounds a guest-given string that goes into an audit record.
func clip(s string) string { return clipTo(s, 256) }

// Bounds on what the proxy records of a request the guest wrote: its URL
// (a request line may be as long as the server's header limit, 1 MiB),
// the host it named, and a rule or an error that quotes them (a
// transport's error quotes the URL it was given, query and all). The
// audit log clips any record over audit.MaxRecord anyway; these keep a
// proxy line readable and its throttle's keys small.
const (
	maxURL  = 4 << 10
	maxHost = 1 << 10
	maxText = 2 << 10
)

// clipTo bounds s to max bytes (at a character's start), "..." marking
// the cut.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// Refusals are audited at most refusalBurst lines at once and then one a
// second per reason: a guest looping on a dead placeholder must not fill
// the audit log. The lines left out are counted on the next one written.
var (
	refusalRate  = rate.Every(time.Second)
	refusalBurst = 20
)

// refusalLog rate-limits the audit lines of refused requests, per rule.
// Its rules are the fixed set above, so its memory is bounded.
type refusalLog struct {
	mu     sync.Mutex
	byRule map[string]*refusalBucket
	limit  rate.Limit
	burst  int
}

type refusalBucket struct {
	lim        *rate.Limiter
	suppressed int
}

func newRefusalLog(limit rate.Limit, burst int) *refusalLog {
	return &refusalLog{byRule: map[string]*refusalBucket{}, limit: limit, burst: burst}
}

// take says whether a refusal under rule gets its audit line, and how many
// were left out since the last one.
func (l *refusalLog) take(rule string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.byRule[rule]
	if b == nil {
		b = &refusalBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.byRule[rule] = b
	}
	if !b.lim.Allow() {
		b.suppressed++
		return false, 0
	}
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// refuse audits a refused relay request, within the rate limit.
func (n *Stack) refuse(rec *audit.Record, status int, rule string) {
	n.refuseFor(rec, status, rule, nil)
}

// refuseFor audits a refused relay request and why, within the rate
// limit. Its caller answers the guest after: a refusal that gets its
// line waits for its owner first (owners.hold), since a client that gets
// its answer may hang up, and its socket go, before the guest is asked.
func (n *Stack) refuseFor(rec *audit.Record, status int, rule string, why error) {
	rec.Status, rec.Rule = status, rule
	ok, left := n.refusals.take(rule)
	if !ok {
		return
	}
	n.owners.hold(rec)
	if left > 0 {
		why = errors.Join(why, fmt.Errorf("%d more requests refused for this reason were not logged (at most %d lines at once, then one a second)", left, refusalBurst))
	}
	n.finish(rec, audit.Deny, why)
}
