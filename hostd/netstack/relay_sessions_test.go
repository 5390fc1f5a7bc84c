//go:build linux

package netstack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// A placeholder works only while its session lives: one never handed out,
// one whose session was closed and one past its ceiling are each refused
// with a 401 in the API's shape, reach nothing, and leave an audit line
// that says which it was.
func TestRelayRefusesDeadSessionsAndAuditsWhy(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	ep := newEndpoint(t)
	closed, _ := tn.Sessions().Open(ep.URL, "sk-real-closed", "", time.Hour)
	if code, body := tn.relayDo(t, "POST", "/v1/messages", apiKey(closed.Placeholder)); code != 200 {
		t.Fatalf("a live session: %d %s", code, body)
	}
	tn.Sessions().Close(closed.ID)
	if _, _, why := tn.Sessions().Lookup(closed.Placeholder); why != Ended {
		t.Fatalf("a closed session looks %q", why)
	}
	late, _ := tn.Sessions().Open(ep.URL, "sk-real-late", "", time.Hour)
	tn.Sessions().mu.Lock()
	tn.Sessions().now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	tn.Sessions().mu.Unlock()

	for _, c := range []struct {
		name    string
		header  http.Header
		rule    Refusal
		session string
	}{
		{"ended", apiKey(closed.Placeholder), Ended, closed.ID},
		{"ended, as a bearer token", http.Header{"Authorization": {"Bearer " + closed.Placeholder}}, Ended, closed.ID},
		{"expired", apiKey(late.Placeholder), Expired, late.ID},
		{"unknown", apiKey(placeholderPrefix + "0123456789abcdef"), Unknown, ""},
		{"none", nil, NoCredential, ""},
	} {
		code, body := tn.relayDo(t, "POST", "/v1/messages?beta=true", c.header)
		if code != http.StatusUnauthorized || apiErrorType(body) != "authentication_error" {
			t.Errorf("%s: %d %s, want a 401 authentication_error", c.name, code, body)
		}
		recs := tn.records(func(r *audit.Record) bool { return r.Kind == audit.KindRelay && r.Rule == string(c.rule) })
		if len(recs) == 0 {
			t.Errorf("%s: no audit record with rule %q", c.name, c.rule)
			continue
		}
		r := recs[len(recs)-1]
		if r.Verdict != audit.Deny || r.Status != http.StatusUnauthorized || r.Session != c.session || r.Method != "POST" || r.URL != "/v1/messages" {
			t.Errorf("%s: record %+v", c.name, r)
		}
	}
	if n := len(ep.requests()); n != 1 {
		t.Errorf("the endpoint got %d requests, want only the one of the live session", n)
	}
	select {
	case <-late.Done():
		if !errors.Is(late.Err(), ErrSessionExpired) {
			t.Errorf("the expired session ended with %v", late.Err())
		}
	default:
		t.Error("the session refused as expired still lives")
	}
}

// The ceiling ends a session on its own, with nobody asking.
func TestRelaySessionEndsAtItsCeiling(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	ep := newEndpoint(t)
	sess, err := tn.Sessions().Open(ep.URL, "sk-real", "", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-time.After(time.Minute):
		t.Fatal("a session with a 50ms ceiling still lives after a minute")
	}
	if !errors.Is(sess.Err(), ErrSessionExpired) {
		t.Fatalf("ended with %v, want ErrSessionExpired", sess.Err())
	}
	if code, body := tn.relayDo(t, "POST", "/v1/messages", apiKey(sess.Placeholder)); code != http.StatusUnauthorized {
		t.Fatalf("after the ceiling: %d %s", code, body)
	}
	if len(tn.records(func(r *audit.Record) bool { return r.Rule == string(Expired) && r.Session == sess.ID })) != 1 {
		t.Fatal("no audit line names the session as expired")
	}
	if len(ep.requests()) != 0 {
		t.Fatal("the request reached the endpoint")
	}
	// No session lives longer than the ceiling, whatever it asks.
	for _, ttl := range []time.Duration{0, -time.Second, 24 * time.Hour} {
		s, _ := tn.Sessions().Open(ep.URL, "k", "", ttl)
		if life := time.Until(s.Expires); life > MaxSessionTTL || life < MaxSessionTTL-time.Hour {
			t.Errorf("asked for %v, lives %v, want %v", ttl, life, MaxSessionTTL)
		}
	}
}

// An answer still streaming when its session ends is cut, and the record
// says so.
func TestRelayCutsAnAnswerWhenItsSessionEnds(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer upstream.Close()
	sess, _ := tn.Sessions().Open(upstream.URL, "sk-real", "", time.Hour)
	c, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, RelayPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: relay\r\nx-api-key: %s\r\nContent-Length: 2\r\n\r\n{}", sess.Placeholder)
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if strings.Contains(line, "message_start") {
			break
		}
	}
	tn.Sessions().Close(sess.ID)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the answer went on after its session ended: %v", err)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindRelay && r.Session == sess.ID })
	if !strings.Contains(r.Error, ErrSessionEnded.Error()) {
		t.Fatalf("record of an answer cut by the session's end: %+v", r)
	}
}

// The table remembers a bounded number of ended sessions: the oldest are
// forgotten (and then look unknown).
func TestSessionsForgetTheOldestEnded(t *testing.T) {
	s := newSessions(nil)
	var first *Session
	for i := range maxEnded + 10 {
		sess, err := s.Open("", "k", "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = sess
		}
		s.Close(sess.ID)
	}
	if len(s.ended) != maxEnded || len(s.order) != maxEnded || len(s.live) != 0 {
		t.Fatalf("the table holds %d ended (%d in order), %d live; want %d ended", len(s.ended), len(s.order), len(s.live), maxEnded)
	}
	if _, _, why := s.Lookup(first.Placeholder); why != Unknown {
		t.Fatalf("the oldest ended session looks %q, want forgotten", why)
	}
}
