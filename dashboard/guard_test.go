package dashboard

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// Every refusal: a request without the token, with another, for another
// Host (DNS rebinding), from another origin or site, or that would
// change something. Each answer, refused or not, carries the CSP.
func TestGuardRefusesWhatIsNotThePagesOwn(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "shown") })
	h := guard(testToken, "8765", ok)
	for _, c := range []struct {
		name   string
		method string
		target string
		header map[string]string
		code   int
	}{
		{"the page", "GET", "/?token=" + testToken, nil, 200},
		{"by localhost", "GET", "/?token=" + testToken, map[string]string{"Host": "localhost:8765"}, 200},
		{"its own origin", "GET", "/events?token=" + testToken, map[string]string{"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}, 200},
		{"typed in the address bar", "GET", "/?token=" + testToken, map[string]string{"Sec-Fetch-Site": "none"}, 200},
		{"HEAD", "HEAD", "/?token=" + testToken, nil, 200},
		{"missing token", "GET", "/", nil, 403},
		{"empty token", "GET", "/?token=", nil, 403},
		{"wrong token", "GET", "/?token=" + strings.Repeat("0", 64), nil, 403},
		{"token's prefix", "GET", "/?token=" + testToken[:63], nil, 403},
		{"token in another parameter", "GET", "/?t=" + testToken, nil, 403},
		{"rebound name", "GET", "/?token=" + testToken, map[string]string{"Host": "attacker.example:8765"}, 403},
		{"other port", "GET", "/?token=" + testToken, map[string]string{"Host": "127.0.0.1:8766"}, 403},
		{"no port", "GET", "/?token=" + testToken, map[string]string{"Host": "127.0.0.1"}, 403},
		{"foreign origin", "GET", "/events?token=" + testToken, map[string]string{"Origin": "http://attacker.example"}, 403},
		{"another local port's origin", "GET", "/events?token=" + testToken, map[string]string{"Origin": "http://127.0.0.1:3000"}, 403},
		{"null origin", "GET", "/events?token=" + testToken, map[string]string{"Origin": "null"}, 403},
		{"https origin", "GET", "/events?token=" + testToken, map[string]string{"Origin": "https://127.0.0.1:8765"}, 403},
		{"cross-site fetch", "GET", "/api/state?token=" + testToken, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-site fetch (another port)", "GET", "/api/state?token=" + testToken, map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"POST", "POST", "/?token=" + testToken, nil, 405},
		{"PUT", "PUT", "/?token=" + testToken, nil, 405},
	} {
		req := httptest.NewRequest(c.method, "http://127.0.0.1:8765"+c.target, nil)
		for k, v := range c.header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("%s: %d, want %d (%s)", c.name, rec.Code, c.code, rec.Body.String())
		}
		if c.code != 200 && strings.Contains(rec.Body.String(), "shown") {
			t.Errorf("%s: refused, yet the page answered", c.name)
		}
		got := rec.Header().Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "img-src 'self'",
			"frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: CSP %q lacks %q", c.name, got, want)
			}
		}
		if n := strings.Count(got, ";") + 1; n != 8 {
			t.Errorf("%s: CSP %q has %d directives, want the 8 above", c.name, got, n)
		}
		if strings.Contains(got, "unsafe") || strings.Contains(got, "*") || strings.Contains(got, "http") || strings.Contains(got, "data:") {
			t.Errorf("%s: CSP %q allows more than the server's own", c.name, got)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			if rec.Header().Get(k) != v {
				t.Errorf("%s: %s %q", c.name, k, rec.Header().Get(k))
			}
		}
	}
}

// The server listens on 127.0.0.1 alone: every other address is refused
// before anything listens.
func TestStartRefusesAnyAddressButLoopback(t *testing.T) {
	home(t)
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "[::1]:0", "localhost:0", "192.0.2.1:0", "127.0.0.2:0", "example.com:80", "127.0.0.1"} {
		s, err := Start(context.Background(), Options{Addr: addr})
		if err == nil {
			s.Close()
			t.Errorf("%q: served at %s", addr, s.URL())
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %q is not one line", addr, err)
		}
	}
	s := start(t, Options{})
	u, err := url.Parse(s.URL())
	if err != nil || u.Hostname() != "127.0.0.1" || u.Port() == "0" || len(u.Query().Get("token")) != 2*tokenBytes {
		t.Fatalf("URL %q: %v", s.URL(), err)
	}
	if s2 := start(t, Options{}); s2.token == s.token {
		t.Error("two servers share a token")
	}
	// Nothing answers on another address of the machine at that port.
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.2", u.Port())); err == nil {
		c.Close()
		t.Error("the server answers on 127.0.0.2")
	}
}

// Through the real server: the page, its assets, the stream and the
// state each need the token; the page names its assets with it.
func TestEveryPathNeedsTheToken(t *testing.T) {
	home(t)
	s := start(t, Options{})
	for _, path := range []string{"/", "/app.js", "/spend.js", "/app.css", "/icon.svg", "/events", "/api/state", "/nothing"} {
		u := strings.Replace(s.URL(), "/?token="+s.token, path, 1)
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("%s without the token: %s", path, resp.Status)
		}
	}
	resp := get(t, s, "/", nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<script src="/app.js?token=`+s.token+`" defer>`) {
		t.Fatalf("the page: %s\n%s", resp.Status, body)
	}
	if strings.Contains(string(body), "<script>") || strings.Contains(string(body), "style=") || strings.Contains(string(body), "http") {
		t.Error("the page has inline script or style, or an external address")
	}
	for path, typ := range map[string]string{"/app.js": "text/javascript", "/spend.js": "text/javascript", "/app.css": "text/css", "/api/state": "application/json"} {
		if resp := get(t, s, path, nil); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) {
			t.Errorf("%s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
	}
	if resp := get(t, s, "/nothing", nil); resp.StatusCode != 404 {
		t.Errorf("/nothing: %s", resp.Status)
	}
	if resp := get(t, s, "/", map[string]string{"Host": "rebound.example:" + strings.Split(strings.TrimPrefix(s.URL(), "http://127.0.0.1:"), "/")[0]}); resp.StatusCode != 403 {
		t.Errorf("a rebound name: %s", resp.Status)
	}
}
