package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
)

// The page's defences. The dashboard shows what the guest did, on a
// port any program or web page on this machine can reach, so every
// request must prove it comes from the user's own tab:
//
//   - the token, 32 random bytes, in the URL the command printed, is
//     asked of every request (compared in constant time). It is never
//     put in a cookie: a browser sends a cookie for 127.0.0.1 to every
//     port of it, that is to any other local server the user visits;
//   - the Host header must name this server (127.0.0.1 or localhost, and
//     its port): a page whose name an attacker rebinds to 127.0.0.1 (DNS
//     rebinding) sends its own name;
//   - a request another site made is refused (Origin, and the browser's
//     Sec-Fetch-Site), though it could not read the answer anyway;
//   - only GET and HEAD: the dashboard changes nothing.
//
// Each answer forbids framing, sniffing, referrers, caching, and any
// script, style or connection that is not the server's own (CSP).

// tokenBytes is the token's length before hex encoding.
const tokenBytes = 32

func newToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// csp allows nothing but this server's own script, style and event
// stream; the page builds its chart as SVG elements, so no images either.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// guard wraps h with the checks above; host is this server's host:port.
func guard(token, port string, h http.Handler) http.Handler {
	hosts := map[string]bool{"127.0.0.1:" + port: true, "localhost:" + port: true}
	origins := map[string]bool{"http://127.0.0.1:" + port: true, "http://localhost:" + port: true}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		switch {
		case !hosts[r.Host]:
			refuse(w, http.StatusForbidden, "this server answers only to 127.0.0.1 and localhost at its own port")
		case r.Header.Get("Origin") != "" && !origins[r.Header.Get("Origin")]:
			refuse(w, http.StatusForbidden, "cross-origin requests are refused")
		case !sameSite(r.Header.Get("Sec-Fetch-Site")):
			refuse(w, http.StatusForbidden, "cross-site requests are refused")
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			hd.Set("Allow", "GET, HEAD")
			refuse(w, http.StatusMethodNotAllowed, "the dashboard only shows; it takes GET and HEAD")
		case subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), want) != 1:
			refuse(w, http.StatusForbidden, "wrong or missing token: open the URL `cowork dashboard` printed")
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// sameSite says whether a Sec-Fetch-Site value is one of the page's own
// requests: same-origin, or none (the user opened the URL). A page on
// another port of 127.0.0.1 is same-site, not same-origin.
func sameSite(v string) bool { return v == "" || v == "same-origin" || v == "none" }

func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte("cowork dashboard: " + msg + "\n"))
}
