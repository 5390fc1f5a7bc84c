package netstack

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// clientHello is what a real TLS client sends first for serverName.
func clientHello(t testing.TB, serverName string) []byte {
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Handshake()
		a.Close()
	}()
	buf := make([]byte, 16<<10)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := b.Read(buf)
	b.Close()
	return buf[:n]
}

func TestSniffName(t *testing.T) {
	hello := clientHello(t, "api.Example.com")
	if name, from := SniffName(hello); name != "api.example.com" || from != "sni" {
		t.Fatalf("SNI: %q %q", name, from)
	}
	for i := range len(hello) - 1 { // any cut short of the whole hello gives nothing, and no panic
		if n := ParseSNI(hello[:i]); n != "" && n != "api.example.com" {
			t.Fatalf("a truncated hello named %q", n)
		}
	}
	for req, want := range map[string]string{
		"GET /x HTTP/1.1\r\nHost: example.org\r\n\r\n":              "example.org",
		"POST / HTTP/1.1\r\nhost: Example.org:8080\r\nA: b\r\n\r\n": "example.org",
		"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n":          "2001:db8::1",
		"GET / HTTP/1.1\r\nX-Host: evil\r\n\r\n":                    "",
		"SSH-2.0-OpenSSH_9.2\r\n":                                   "",
		"GET / HTTP/1.1\r\nHost: bad name\x00\r\n\r\n":              "",
	} {
		if got := ParseHTTPHost([]byte(req)); got != want {
			t.Errorf("%q: got %q, want %q", req, got, want)
		}
	}
}

func FuzzSniffName(f *testing.F) {
	f.Add(clientHello(f, "example.com"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 5, 1, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, _ := SniffName(b)
		if name != cleanName(name) || bytes.ContainsAny([]byte(name), " \r\n\x00") {
			t.Fatalf("an unclean name %q", name)
		}
	})
}
