//go:build linux

package netstack

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// The relay forwards the calls Claude Code makes, with their query, and
// refuses the rest with a 404 in the API's shape and an audit line.
func TestRelayForwardsOnlyClaudeCodesCalls(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	ep := newEndpoint(t)
	sess, _ := tn.Sessions().Open(ep.URL, "sk-real", "", time.Hour)
	key := apiKey(sess.Placeholder)
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/v1/messages?beta=true", "/v1/messages?beta=true"},
		{"POST", "/v1/messages/count_tokens?beta=true", "/v1/messages/count_tokens?beta=true"},
		{"GET", "/v1/models?limit=20", "/v1/models?limit=20"},
		{"GET", "/v1/models/claude-opus-4-1", "/v1/models/claude-opus-4-1"},
		{"POST", "/v1/%6Dessages", "/v1/messages"}, // sent on in one spelling
	} {
		before := len(ep.requests())
		code, body := tn.relayDo(t, c.method, c.path, key)
		reqs := ep.requests()
		if code != 200 || len(reqs) != before+1 {
			t.Errorf("%s %s: %d %s, %d requests reached the endpoint", c.method, c.path, code, body, len(reqs)-before)
			continue
		}
		if got := reqs[len(reqs)-1]; got.Method != c.method || got.URL.RequestURI() != c.want {
			t.Errorf("%s %s reached the endpoint as %s %s", c.method, c.path, got.Method, got.URL.RequestURI())
		}
	}

	before := len(ep.requests())
	for _, c := range []struct {
		method, path string
		header       http.Header
	}{
		{"GET", "/v1/messages", nil},
		{"PUT", "/v1/messages", nil},
		{"DELETE", "/v1/models/claude-opus-4-1", nil},
		{"POST", "/v1/models", nil},
		{"POST", "/v1/complete", nil},
		{"POST", "/v1/messages/batches", nil},
		{"GET", "/v1/files", nil},
		{"POST", "/v1/organizations/api_keys", nil},
		{"GET", "/api/oauth/profile", nil},
		{"GET", "/api/claude_code/settings", nil},
		{"POST", "/v1/messages/", nil},
		{"POST", "//v1/messages", nil},
		{"POST", "/v1/messages/../files", nil},
		{"POST", "/v1/messages%2F..%2Ffiles", nil},
		{"GET", "/v1/models/a/b", nil},
		{"POST", "/", nil},
		{"POST", "/v1/messages", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}},
	} {
		h := key.Clone()
		for k, v := range c.header {
			h[k] = v
		}
		code, body := tn.relayDo(t, c.method, c.path, h)
		if code != http.StatusNotFound || apiErrorType(body) != "not_found_error" {
			t.Errorf("%s %s: %d %s, want a 404 not_found_error", c.method, c.path, code, body)
		}
		recs := tn.records(func(r *audit.Record) bool { return r.Rule == RouteRefused && r.Method == c.method })
		if len(recs) == 0 || recs[len(recs)-1].Verdict != audit.Deny || recs[len(recs)-1].Status != http.StatusNotFound {
			t.Errorf("%s %s: no audit line of the refusal", c.method, c.path)
		}
	}
	if n := len(ep.requests()) - before; n != 0 {
		t.Errorf("%d refused requests reached the endpoint", n)
	}

	// Claude Code's reachability probe is answered here, unaudited.
	for _, m := range []string{"HEAD", "GET"} {
		if code, _ := tn.relayDo(t, m, "/api/hello", nil); code != 200 {
			t.Errorf("%s /api/hello: %d", m, code)
		}
	}
	if len(ep.requests()) != before {
		t.Error("/api/hello reached the endpoint")
	}
}

// Whatever credential the guest sends, in whatever header or trailer,
// only the host's reaches the endpoint, and once.
func TestRelayStripsTheGuestsCredentials(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	ep := newEndpoint(t)
	keySess, _ := tn.Sessions().Open(ep.URL, "sk-real-key", "", time.Hour)
	tokenSess, _ := tn.Sessions().Open(ep.URL, "", "real-oauth-token", time.Hour)
	guestHeaders := "Proxy-Authorization: Basic Z3Vlc3Q6c2VjcmV0\r\n" +
		"Cookie: session=guest-cookie\r\n" +
		"Anthropic-Api-Key: guest-anthropic-key\r\n" +
		"Anthropic-Admin-Api-Key: guest-admin-key\r\n" +
		"Anthropic-Oauth-Token: guest-oauth\r\n" +
		"X-Trusted-Device-Token: guest-device\r\n" +
		"X-Access-Token: guest-access\r\n" +
		"Anthropic-Version: 2023-06-01\r\n" +
		"Anthropic-Beta: claude-code-20250219\r\n" +
		"X-Stainless-Retry-Count: 0\r\n" +
		"Trailer: X-Api-Key, Authorization\r\n" +
		"Transfer-Encoding: chunked\r\n"
	for _, c := range []struct {
		name, credential, want, wantHeader, goneHeader string
	}{
		{"api key", "x-api-key: " + keySess.Placeholder + "\r\nAuthorization: Bearer guest-bearer\r\n" +
			"Connection: keep-alive, x-api-key\r\n", "sk-real-key", "X-Api-Key", "Authorization"},
		{"bearer token", "Authorization: Bearer " + tokenSess.Placeholder + "\r\nConnection: Authorization\r\n",
			"Bearer real-oauth-token", "Authorization", "X-Api-Key"},
	} {
		before := len(ep.requests())
		conn, err := tn.dialGuest(fmt.Sprintf("%s:%d", GatewayIP, RelayPort))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: relay\r\n%s%s\r\n"+
			"2\r\n{}\r\n0\r\nX-Api-Key: guest-trailer-key\r\nAuthorization: Bearer guest-trailer\r\n\r\n", c.credential, guestHeaders)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		resp.Body.Close()
		conn.Close()
		reqs := ep.requests()
		if resp.StatusCode != 200 || len(reqs) != before+1 {
			t.Fatalf("%s: %d, %d requests reached the endpoint", c.name, resp.StatusCode, len(reqs)-before)
		}
		got := reqs[len(reqs)-1]
		if v := got.Header.Values(c.wantHeader); len(v) != 1 || v[0] != c.want {
			t.Errorf("%s: the endpoint got %s %q, want only %q", c.name, c.wantHeader, v, c.want)
		}
		var dump bytes.Buffer
		got.Header.Write(&dump)
		got.Trailer.Write(&dump)
		for _, leak := range []string{"guest", "Z3Vlc3Q6c2VjcmV0", "cowork-session-"} {
			if strings.Contains(dump.String(), leak) {
				t.Errorf("%s: the guest's credential %q reached the endpoint:\n%s", c.name, leak, dump.String())
			}
		}
		if got.Header.Get(c.goneHeader) != "" || got.Header.Get("Cookie") != "" {
			t.Errorf("%s: the endpoint got %s or a cookie:\n%s", c.name, c.goneHeader, dump.String())
		}
		if got.Header.Get("Anthropic-Version") != "2023-06-01" || got.Header.Get("Anthropic-Beta") != "claude-code-20250219" ||
			got.Header.Get("X-Stainless-Retry-Count") != "0" {
			t.Errorf("%s: Claude Code's own headers did not pass:\n%s", c.name, dump.String())
		}
	}
}

// A guest looping on a dead placeholder gets its answers but cannot fill
// the audit log: past the burst, lines are left out and counted on the
// next one written.
func TestRelayRefusalsAreRateLimited(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.refusals.mu.Lock()
	tn.refusals.limit, tn.refusals.burst = 0, 5 // no refill: exactly the burst
	tn.refusals.mu.Unlock()
	bogus := apiKey(placeholderPrefix + "bogus")
	for range 12 {
		if code, _ := tn.relayDo(t, "POST", "/v1/messages", bogus); code != http.StatusUnauthorized {
			t.Fatalf("a bogus placeholder: %d", code)
		}
	}
	unknown := func(r *audit.Record) bool { return r.Rule == string(Unknown) }
	if n := len(tn.records(unknown)); n != 5 {
		t.Fatalf("%d audit lines for 12 refusals, want the burst of 5", n)
	}
	// Another reason has its own budget.
	if code, _ := tn.relayDo(t, "GET", "/v1/files", nil); code != http.StatusNotFound {
		t.Fatalf("GET /v1/files: %d", code)
	}
	if len(tn.records(func(r *audit.Record) bool { return r.Rule == RouteRefused })) != 1 {
		t.Fatal("a refusal for another reason was left out")
	}
	tn.refusals.mu.Lock()
	tn.refusals.byRule[string(Unknown)].lim.SetLimit(rate.Inf)
	tn.refusals.mu.Unlock()
	tn.relayDo(t, "POST", "/v1/messages", bogus)
	recs := tn.records(unknown)
	if len(recs) != 6 || !strings.Contains(recs[5].Error, "7 more requests refused for this reason were not logged") {
		t.Fatalf("the line after the gap does not count it: %d lines, last %+v", len(recs), recs[len(recs)-1])
	}
	if len(tn.refusals.byRule) != 2 {
		t.Fatalf("the limiter keeps %d buckets, want one per reason seen", len(tn.refusals.byRule))
	}
}
