package netstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/hostd/netstack/usage"
)

// DefaultAPIEndpoint is where the relay sends API calls when the session
// names no endpoint.
const DefaultAPIEndpoint = "https://api.anthropic.com"

// MaxSessionTTL is a session's ceiling, the backstop behind the rule that a
// session ends with the command that opened it (its stream to hostd): long
// enough for a long unattended Claude Code task, short enough that a
// placeholder a guest kept cannot be used through the night or the next
// day. A session asked for a longer life, or for none, gets this.
const MaxSessionTTL = 8 * time.Hour

// placeholderPrefix marks a relay placeholder, so it is recognizable in
// the guest and in a log.
const placeholderPrefix = "cowork-session-"

// maxEnded is how many ended sessions the table remembers, to tell a
// request on one of them from one on a placeholder that never existed.
// Sessions are opened by the host only; the bound keeps a long-lived hostd
// small all the same.
const maxEnded = 4096

// Refusal says why the relay refused a request's credential; it is the
// audit record's rule.
type Refusal string

const (
	// NoCredential: the request carried no x-api-key or bearer token.
	NoCredential Refusal = "relay: no session credential"
	// Unknown: the credential is no placeholder this hostd handed out.
	Unknown Refusal = "relay: unknown session"
	// Ended: the session was closed (its command ended, however it ended).
	Ended Refusal = "relay: ended session"
	// Expired: the session reached its ceiling.
	Expired Refusal = "relay: expired session"
)

// ErrSessionEnded and ErrSessionExpired are why a session's context ended.
var (
	ErrSessionEnded   = errors.New("the session ended: the command that opened it is over")
	ErrSessionExpired = errors.New("the session reached its ceiling")
)

// Session binds a placeholder the guest gets to the real endpoint and
// credential, which stay on the host.
type Session struct {
	ID          string
	Placeholder string
	Endpoint    *url.URL
	// One of these two: an API key (x-api-key) or an OAuth/bearer token.
	apiKey, authToken string
	Expires           time.Time
	// ask is the session's account: what it spent, and its budget.
	ask *budget.Ask

	ctx    context.Context // done when the session ends; its cause says why
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

// Done is closed when the session ends; Err then says why
// (ErrSessionEnded or ErrSessionExpired).
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err is nil while the session lives, then why it ended.
func (s *Session) Err() error { return context.Cause(s.ctx) }

// Usage is what the session spent so far (all of it, once it ended).
func (s *Session) Usage() budget.Session { return s.ask.Totals() }

// secrets are the strings no log line, audit record or error may carry.
func (s *Session) secrets() []string {
	out := []string{s.apiKey, s.authToken}
	if s.Endpoint.User != nil {
		out = append(out, s.Endpoint.User.String())
		if pw, ok := s.Endpoint.User.Password(); ok {
			out = append(out, pw)
		}
	}
	return out
}

// endedSession is what the table keeps of a session that ended.
type endedSession struct {
	id  string
	why Refusal
}

// Sessions is the relay's table; hostd opens a session per `ask` or
// `claude` and ends it when the command ends.
type Sessions struct {
	ledger *budget.Ledger
	mu     sync.Mutex
	live   map[string]*Session     // by placeholder
	ended  map[string]endedSession // by placeholder
	order  []string                // ended placeholders, oldest first
	now    func() time.Time
}

// newSessions is a table whose sessions are counted in ledger (nil: one
// of its own, in memory).
func newSessions(ledger *budget.Ledger) *Sessions {
	if ledger == nil {
		ledger, _ = budget.New(budget.Config{})
	}
	return &Sessions{ledger: ledger, live: map[string]*Session{}, ended: map[string]endedSession{}, now: time.Now}
}

// SessionRequest is a session to open: its credential and endpoint, its
// ceiling, and what it may spend.
type SessionRequest struct {
	// Endpoint "" means DefaultAPIEndpoint; exactly one of APIKey and
	// AuthToken.
	Endpoint, APIKey, AuthToken string
	// TTL is the session's ceiling (at most, and by default,
	// MaxSessionTTL).
	TTL time.Duration
	// What names the session in usage.json: ask, claude.
	What string
	// Budget is the session's own (zero: none); Prices price its answers
	// (nil: the built-in table).
	Budget budget.Limit
	Prices *usage.Table
}

// Open registers a credential and returns the session whose placeholder
// the guest process gets, with no budget of its own (see OpenRequest).
func (s *Sessions) Open(endpoint, apiKey, authToken string, ttl time.Duration) (*Session, error) {
	return s.OpenRequest(SessionRequest{Endpoint: endpoint, APIKey: apiKey, AuthToken: authToken, TTL: ttl})
}

// OpenRequest registers a credential and returns the session whose
// placeholder the guest process gets.
func (s *Sessions) OpenRequest(r SessionRequest) (*Session, error) {
	if (r.APIKey == "") == (r.AuthToken == "") {
		return nil, errors.New("a session needs exactly one of an API key and an auth token")
	}
	endpoint := r.Endpoint
	if endpoint == "" {
		endpoint = DefaultAPIEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("API endpoint %s: want an http(s) URL such as %s", policy.RedactURL(endpoint), DefaultAPIEndpoint)
	}
	if err := r.Budget.Check("the session's token budget", "the session's cost budget"); err != nil {
		return nil, err
	}
	ttl := r.TTL
	if ttl <= 0 || ttl > MaxSessionTTL {
		ttl = MaxSessionTTL
	}
	sess := &Session{ID: randomHex(8), Placeholder: placeholderPrefix + randomHex(24), Endpoint: u,
		apiKey: r.APIKey, authToken: r.AuthToken, Expires: s.now().Add(ttl)}
	sess.ask = s.ledger.Open(sess.ID, r.What, r.Budget, r.Prices)
	sess.ctx, sess.cancel = context.WithCancelCause(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[sess.Placeholder] = sess
	sess.timer = time.AfterFunc(ttl, func() { s.end(sess, Expired) })
	return sess, nil
}

// Close ends a session; its placeholder stops working at once and its
// requests in flight are cut. It returns the session, nil when no live
// one has that id (closing an ended session does nothing).
func (s *Sessions) Close(id string) *Session {
	s.mu.Lock()
	var found *Session
	for _, sess := range s.live {
		if sess.ID == id {
			found = sess
			break
		}
	}
	s.mu.Unlock()
	if found != nil {
		s.end(found, Ended)
	}
	return found
}

// Known says whether id names a session of this table, live or among the
// ended ones it remembers.
func (s *Sessions) Known(id string) bool {
	if id == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.live {
		if sess.ID == id {
			return true
		}
	}
	for _, e := range s.ended {
		if e.id == id {
			return true
		}
	}
	return false
}

// end moves a live session to the ended ones, remembering why, and
// closes its account (its answers still streaming are counted as they
// settle).
func (s *Sessions) end(sess *Session, why Refusal) {
	if s.endLocked(sess, why) {
		_, _ = sess.ask.End() // a store that fails was said at its last answer
	}
}

func (s *Sessions) endLocked(sess *Session, why Refusal) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[sess.Placeholder] != sess {
		return false // already ended
	}
	delete(s.live, sess.Placeholder)
	sess.timer.Stop()
	cause := ErrSessionEnded
	if why == Expired {
		cause = ErrSessionExpired
	}
	sess.cancel(cause)
	s.ended[sess.Placeholder] = endedSession{id: sess.ID, why: why}
	s.order = append(s.order, sess.Placeholder)
	if len(s.order) > maxEnded {
		delete(s.ended, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

// Lookup is the relay's check of a request's credential: the live session
// it names, or why there is none (with the session's id when it is one
// that ended). A session past its ceiling ends here even if its timer has
// not fired yet.
func (s *Sessions) Lookup(placeholder string) (sess *Session, id string, why Refusal) {
	if placeholder == "" {
		return nil, "", NoCredential
	}
	s.mu.Lock()
	sess = s.live[placeholder]
	gone, ended := s.ended[placeholder]
	expired := sess != nil && !s.now().Before(sess.Expires)
	s.mu.Unlock()
	switch {
	case expired:
		s.end(sess, Expired)
		return nil, sess.ID, Expired
	case sess != nil:
		return sess, sess.ID, ""
	case ended:
		return nil, gone.id, gone.why
	}
	return nil, "", Unknown
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// placeholderOf reads the credential the guest sent: x-api-key, or a
// bearer token.
func placeholderOf(h http.Header) string {
	if k := h.Get("x-api-key"); k != "" {
		return strings.TrimSpace(k)
	}
	if a, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(a)
	}
	return ""
}
