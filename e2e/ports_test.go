//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// checkPorts publishes a guest port while the instance runs: it answers
// on the host at once, is listed and audited, and once removed answers no
// more; a second removal says what is published.
func checkPorts(t *testing.T, e *env) {
	e.must("exec", "-u", "root", `mkdir -p /tmp/site && echo from-the-guest > /tmp/site/index.html &&
setsid -f python3 -m http.server 8000 --bind 0.0.0.0 --directory /tmp/site >/dev/null 2>&1
for i in $(seq 100); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8000))' 2>/dev/null && exit 0; sleep 0.1; done; exit 1`)
	r := e.must("port", "publish", "8000:0")
	addr := strings.TrimSpace(r.out)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("port publish: %s", r)
	}
	get := func() (string, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get(); err != nil || body != "from-the-guest\n" {
		t.Errorf("GET through the published port: %q, %v", body, err)
	}
	var ports []struct {
		HostAddr  string `json:"host_addr"`
		GuestPort int    `json:"guest_port"`
	}
	if r := e.must("port", "ls", "--json"); json.Unmarshal([]byte(r.out), &ports) != nil || len(ports) != 1 || ports[0].HostAddr != addr || ports[0].GuestPort != 8000 {
		t.Errorf("port ls: %s", r.out)
	}
	if r := e.must("port", "rm", "8000"); strings.TrimSpace(r.out) != addr {
		t.Errorf("port rm: %s", r)
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still answers after port rm", addr)
	}
	if r := e.run("port", "rm", "8000"); r.code != 1 || !strings.Contains(r.errOut, "is not published") {
		t.Errorf("port rm of a removed port: %s", r)
	}
	kinds := map[string]bool{}
	for _, a := range e.auditLines(t) {
		if a.Dst == addr {
			kinds[a.Kind] = true
		}
	}
	if !kinds["publish"] || !kinds["unpublish"] {
		t.Errorf("the audit log's records of %s: %v", addr, kinds)
	}
	checkUDPPort(t, e)
	checkAutoPorts(t, e)
}

// checkAutoPorts follows the guest's listening ports: a server started
// after --auto is published at its number, and goes when it stops.
func checkAutoPorts(t *testing.T, e *env) {
	const port = "18123"
	e.must("port", "publish", "--auto")
	e.must("exec", "-u", "root", "setsid -f python3 -m http.server "+port+" --bind 0.0.0.0 --directory /tmp/site >/dev/null 2>&1")
	followed := func() bool {
		r := e.must("port", "ls")
		return strings.Contains(strings.Join(strings.Fields(r.out), " "), "127.0.0.1:"+port+" "+port+" tcp auto")
	}
	waitFor := func(want bool) bool {
		for i := 0; i < 100; i++ {
			if followed() == want {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	if !waitFor(true) {
		t.Fatalf("the guest's server on %s was not followed: %s", port, e.must("port", "ls").out)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	if resp, err := c.Get("http://127.0.0.1:" + port + "/"); err != nil {
		t.Errorf("GET through the followed port: %v", err)
	} else {
		resp.Body.Close()
	}
	e.must("exec", "-u", "root", "pkill -f 'http[.]server "+port+"'; true")
	if !waitFor(false) {
		t.Errorf("the followed port stayed after the guest's server stopped: %s", e.must("port", "ls").out)
	}
	e.must("port", "rm", "--auto")
	if r := e.must("status", "--json"); strings.Contains(r.out, `"auto_publish": true`) {
		t.Errorf("status after port rm --auto: %s", r.out)
	}
}

// checkUDPPort publishes a guest UDP echo service and asks it from here.
func checkUDPPort(t *testing.T, e *env) {
	e.must("exec", "-u", "root", `setsid -f python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    b, a = s.recvfrom(2048)
    s.sendto(b"re:" + b, a)
' >/dev/null 2>&1; sleep 0.5`)
	r := e.must("port", "publish", "5353:0", "--udp")
	addr, ok := strings.CutSuffix(strings.TrimSpace(r.out), "/udp")
	if !ok || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("port publish --udp: %s", r)
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := ""
	for try := 0; try < 20 && got == ""; try++ { // the server may still be starting
		io.WriteString(c, "ping")
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		b := make([]byte, 64)
		if n, err := c.Read(b); err == nil {
			got = string(b[:n])
		}
	}
	if got != "re:ping" {
		t.Errorf("through the published UDP port %s: %q", addr, got)
	}
	if r := e.must("port", "ls"); !strings.Contains(strings.Join(strings.Fields(r.out), " "), addr+" 5353 udp") {
		t.Errorf("port ls: %s", r.out)
	}
	if r := e.must("port", "rm", "5353/udp"); strings.TrimSpace(r.out) != addr+"/udp" {
		t.Errorf("port rm 5353/udp: %s", r)
	}
}
