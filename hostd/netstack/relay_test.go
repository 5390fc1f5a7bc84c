//go:build linux

package netstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// endpoint is a fake API endpoint that records what reaches it.
type endpoint struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request // with their body read, so that Trailer is filled
}

func newEndpoint(t *testing.T) *endpoint {
	e := &endpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		e.mu.Lock()
		e.seen = append(e.seen, r)
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message"}`)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) requests() []*http.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*http.Request(nil), e.seen...)
}

// relayURL is the relay as the guest reaches it.
func relayURL(path string) string { return fmt.Sprintf("http://%s:%d%s", GatewayIP, RelayPort, path) }

// guestClient is an HTTP client in the guest.
func (tn *testNet) guestClient() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return tn.dialGuest(addr)
	}}}
}

// relayDo sends one request from the guest and returns the answer's
// status and body.
func (tn *testNet) relayDo(t *testing.T, method, path string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, relayURL(path), strings.NewReader(`{"model":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := tn.guestClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// records is every audit record that matches, as the log holds them now.
func (tn *testNet) records(match func(*audit.Record) bool) []*audit.Record {
	var out []*audit.Record
	audit.Stream(context.Background(), tn.auditLog, time.Time{}, false, func(r *audit.Record) error {
		if match(r) {
			out = append(out, r)
		}
		return nil
	})
	return out
}

func apiKey(k string) http.Header { return http.Header{"X-Api-Key": {k}} }

// apiErrorType is the error type of an answer in the API's error shape.
func apiErrorType(body string) string {
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Type != "error" || e.Error.Message == "" {
		return ""
	}
	return e.Error.Type
}

// secretWorld is a fake internet whose every connection fails with an
// error that quotes the URL it was for, password and all, as a *url.Error
// does.
func secretWorld(endpoint string) func(*Config) {
	return func(c *Config) {
		c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nil, &url.Error{Op: "Post", URL: endpoint + "/v1/messages", Err: errors.New("connection refused")}
		}
	}
}

// No secret reaches hostd's log, the audit log or the guest: neither the
// key nor the password of an endpoint or upstream proxy, even in errors
// that quote a URL.
func TestRelayNeverLogsASecret(t *testing.T) {
	const endpoint = "http://gw-user:gw-s3cret@api.example.test"
	var logBuf bytes.Buffer
	var mu sync.Mutex
	tn := newTestNet(t, policy.Policy{}, secretWorld(endpoint), func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &mu}, nil))
	})
	sess, err := tn.Sessions().Open(endpoint, "sk-ant-s3cret-key", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	code, body := tn.relayDo(t, "POST", "/v1/messages", apiKey(sess.Placeholder))
	if code != http.StatusBadGateway || apiErrorType(body) != "api_error" {
		t.Fatalf("an unreachable endpoint: %d %s", code, body)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Session == sess.ID })
	if !strings.Contains(r.Error, "connection refused") || !strings.Contains(body, "connection refused") {
		t.Fatalf("the error does not say what failed: %q, %s", r.Error, body)
	}
	auditLog, _ := os.ReadFile(tn.auditLog)
	mu.Lock()
	hostdLog := logBuf.String()
	mu.Unlock()
	for where, text := range map[string]string{"the guest's answer": body, "the audit log": string(auditLog), "hostd's log": hostdLog} {
		for _, secret := range []string{"s3cret", "gw-user"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds %q:\n%s", where, secret, text)
			}
		}
	}

	// An upstream proxy's password stays out of the errors that reach
	// hostd's log and the terminal.
	for _, raw := range []string{"ftp://proxy-user:proxy-s3cret@proxy.test:21", "http://proxy-user:proxy s3cret@proxy.test:8080", "http://proxy.test:8080?token=proxy-s3cret"} {
		_, err := newDialer(raw, nil)
		if err == nil {
			if raw == "http://proxy.test:8080?token=proxy-s3cret" {
				continue // a valid URL: no error to check
			}
			t.Fatalf("%s: no error", policy.RedactURL(raw))
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "proxy-user") {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://api.anthropic.com":          "https://api.anthropic.com",
		"http://user:pw@proxy:8080":          "http://xxxxx@proxy:8080",
		"https://token@gw.example/anthropic": "https://xxxxx@gw.example/anthropic",
		"https://gw.example/v1?key=abc":      "https://gw.example/v1?xxxxx",
		"socks5://u:p@127.0.0.1:1080":        "socks5://xxxxx@127.0.0.1:1080",
		"http://user:pass word@proxy:1":      "(a URL that does not parse)",
		"http://user:p%zz@proxy:1":           "(a URL that does not parse)",
		"https://gw.example/anthropic?":      "https://gw.example/anthropic",
	} {
		if got := policy.RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
	got := redactText(`Post "http://u:pw@a.test/x": then https://tok@b.test and sk-1`, "sk-1")
	if got != `Post "http://xxxxx@a.test/x": then https://xxxxx@b.test and xxxxx` {
		t.Errorf("redactText: %q", got)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// closedAfterEOF is a request body as the server hands it over: once read
// to its end, the server may close it, and a read then fails.
type closedAfterEOF struct {
	data   string
	closed bool
}

func (b *closedAfterEOF) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("http: invalid Read on closed Body")
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	if b.data == "" {
		b.closed = true
		return n, io.EOF
	}
	return n, nil
}

func (b *closedAfterEOF) Close() error { return nil }

// The transport reads once more past a body's end; the relay's body says
// EOF again rather than asking the server, which may have closed it (the
// race that cut answers short now and then).
func TestRelayRequestBodyKeepsItsEnd(t *testing.T) {
	var n atomic.Int64
	b := &requestBody{ReadCloser: &closedAfterEOF{data: "{}"}, n: &n}
	p := make([]byte, 10)
	if k, err := b.Read(p); k != 2 || err != io.EOF {
		t.Fatalf("first read: %d %v", k, err)
	}
	if k, err := b.Read(p); k != 0 || err != io.EOF {
		t.Fatalf("a read past the end: %d %v, want EOF", k, err)
	}
	if n.Load() != 2 {
		t.Fatalf("counted %d bytes", n.Load())
	}
}
