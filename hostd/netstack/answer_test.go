//go:build linux

package netstack

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// halfAnswer is what the fake server sends of an answer it never
// finishes: the promise of cutLength bytes, and sentBytes of them.
const (
	cutLength = 100000
	sentBytes = 1000
)

// serveHalfAnswer answers the first request on c with halfAnswer, then
// either closes (upstreamCloses) or waits for the proxy to give up.
func serveHalfAnswer(upstreamCloses bool) func(net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", cutLength)
		c.Write(make([]byte, sentBytes))
		if !upstreamCloses {
			io.Copy(io.Discard, br) // until the proxy hangs up
		}
	}
}

// askProxy sends a plain HTTP request through the gateway's proxy from the
// guest and reads the answer's head and the sentBytes that come of its body.
func askProxy(t *testing.T, tn *testNet, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: proxied.test\r\n\r\n", target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer's head: %v", err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != cutLength {
		t.Fatalf("answer %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, sentBytes)); err != nil {
		t.Fatalf("reading what came of the body: %v", err)
	}
	return c, br
}

// TestProxyAnswerCutShortIsRecorded: a proxied answer that breaks off
// (the server closes mid-body, or the guest hangs up mid-body) gets its
// audit line all the same, saying it was cut and by whom, as the relay's
// does (TestRelayAnswerCutShortIsRecorded). The proxy used to write no
// line at all: ReverseProxy's abort skipped it.
func TestProxyAnswerCutShortIsRecorded(t *testing.T) {
	for _, c := range []struct {
		name           string
		upstreamCloses bool
		want           string
	}{
		{"the server closes mid-body", true, "the answer from the server broke off"},
		{"the guest hangs up mid-body", false, "the guest's connection ended before the answer did"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tn := newTestNet(t, policy.Policy{})
			tn.world.serveTCP(t, "198.51.100.30:80", serveHalfAnswer(c.upstreamCloses))
			conn, br := askProxy(t, tn, "http://proxied.test/cut")
			if c.upstreamCloses {
				// The proxy drops the guest's connection: the answer is
				// shorter than it said, and the guest must not take it whole.
				if k, _ := io.Copy(io.Discard, br); k != 0 {
					t.Fatalf("after the break the guest read %d more bytes", k)
				}
			} else {
				conn.Close()
			}
			r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.URL == "http://proxied.test/cut" })
			if r.Verdict != audit.Allow || r.Status != 200 || r.BytesIn != sentBytes || !strings.Contains(r.Error, c.want) {
				t.Fatalf("record of a cut-short answer: %+v, want the error to say %q", r, c.want)
			}
		})
	}
}

// TestProxyAnswerWholeHasNoError: an answer that ends as it said has no
// error in its line (the cut-short record is not written for every one).
func TestProxyAnswerWholeHasNoError(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.30:80", func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwhole")
	})
	resp, err := tn.proxyClient().Get("http://proxied.test/whole")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != "whole" {
		t.Fatalf("answer %q %v", got, err)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindHTTP && r.URL == "http://proxied.test/whole" })
	if r.Status != 200 || r.BytesIn != 5 || r.Error != "" {
		t.Fatalf("record of a whole answer: %+v", r)
	}
}
