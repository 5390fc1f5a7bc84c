//go:build e2e

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/tlsca"
)

// checkSecrets runs on a running instance: a TLS service on the host
// (an exposed port, its certificate from a CA of its own, given with the
// secret) that answers only the real token. The guest, holding only a
// placeholder, is let in; the value is nowhere in the guest or the logs;
// the placeholder sent elsewhere stays one; once removed, nothing is
// swapped.
func checkSecrets(t *testing.T, e *env) {
	const value, value2 = "tok_e2e-real-value-5a7b", "tok_e2e-second-value-9c1d"
	caPEM, keyPEM, err := tlsca.New("service", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := tlsca.Load(caPEM, keyPEM)
	cert, err := tlsca.Issue(ca, "host.cowork.internal", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer " + value:
			io.WriteString(w, "authorized\n")
			return
		case "Bearer " + value2:
			io.WriteString(w, "authorized again\n")
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "denied: %s\n", r.Header.Get("Authorization"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, caPEM, 0o644)

	e.must("policy", "expose", fmt.Sprint(port))
	host := fmt.Sprintf("host.cowork.internal:%d", port)
	if r := e.runIn(value+"\n", "secret", "set", "SVC_TOKEN", "--host", host, "--bearer", "--ca", caFile); r.code != 0 || !strings.Contains(r.errOut, "the running guest has $SVC_TOKEN now") {
		t.Fatalf("secret set: %s", r)
	}
	call := fmt.Sprintf(`curl -sS --max-time 20 -H "Authorization: Bearer $SVC_TOKEN" https://%s/`, host)
	if r := e.run("exec", call); r.out != "authorized\n" {
		t.Fatalf("the guest's request with the placeholder: %s", r)
	}
	// The value is in no variable, no trusted file, no file the guest
	// wrote; the placeholder is there.
	r := e.run("exec", "-u", "root", `env; cat /etc/ssl/certs/ca-certificates.crt; grep -rl `+value+` /etc /run /tmp /home /root /var/log 2>/dev/null; true`)
	if strings.Contains(r.out, value) || !strings.Contains(r.out, "SVC_TOKEN=cowork-secret-") || !strings.Contains(r.out, "cowork secrets CA") {
		t.Fatalf("the guest's side: %s", r)
	}
	// Sent to another host (the exposed plain-HTTP service, through the
	// proxy): the placeholder, and the audit says it was withheld.
	r = e.run("exec", fmt.Sprintf(`no_proxy= NO_PROXY= curl -sS --max-time 10 -H "Authorization: Bearer $SVC_TOKEN" http://host.cowork.internal:%d/`, port))
	if strings.Contains(r.out, "authorized") {
		t.Errorf("plain HTTP got the value: %s", r)
	}
	var used, withheld bool
	for _, l := range strings.Split(e.must("proxy", "--json", "--follow=false", "--since", "0").out, "\n") {
		var a struct {
			URL             string   `json:"url"`
			Secrets         []string `json:"secrets"`
			SecretsWithheld []string `json:"secrets_withheld"`
			TLSTerminated   bool     `json:"tls_terminated"`
		}
		json.Unmarshal([]byte(l), &a)
		used = used || a.TLSTerminated && len(a.Secrets) == 1 && a.Secrets[0] == "SVC_TOKEN" && strings.HasPrefix(a.URL, "https://"+host)
		withheld = withheld || len(a.SecretsWithheld) == 1 && a.SecretsWithheld[0] == "SVC_TOKEN"
	}
	if !used || !withheld {
		t.Errorf("the audit log: used %v, withheld %v", used, withheld)
	}
	if r := e.must("secret", "ls"); !strings.Contains(r.out, "SVC_TOKEN") || strings.Contains(r.out, value) {
		t.Errorf("secret ls: %s", r)
	}
	// A new value alone (the host and the rest kept): the running guest's
	// same placeholder now carries it.
	if r := e.runIn(value2, "secret", "set", "SVC_TOKEN"); r.code != 0 {
		t.Fatalf("secret set, a new value: %s", r)
	}
	if r := e.run("exec", call); r.out != "authorized again\n" {
		t.Errorf("after a new value: %s", r)
	}
	for _, f := range []string{"hostd.log", "network.jsonl", "config.json", "serial.log"} {
		if b, _ := os.ReadFile(filepath.Join(e.instanceDir("sandbox"), f)); strings.Contains(string(b), value) || strings.Contains(string(b), value2) {
			t.Errorf("%s holds the value", f)
		}
	}
	// Removed: nothing swaps it, the guest's TLS is its own again (and
	// the service's CA is not the guest's).
	e.must("secret", "rm", "SVC_TOKEN")
	if r := e.run("exec", call); r.code == 0 || strings.Contains(r.out, "authorized") {
		t.Errorf("after secret rm: %s", r)
	}
}
