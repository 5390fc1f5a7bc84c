package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// The log port takes a loopback address only: on any other, the guests
// on the pod network would read every sandbox's traffic of the namespace.
func TestEgressLogListensOnLoopbackOnly(t *testing.T) {
	auditDir := filepath.Join(t.TempDir(), "audit")
	for _, addr := range []string{":7893", "0.0.0.0:7893", "[::]:7893", "10.1.2.3:7893", "localhost:7893", "127.0.0.1", "[fe80::1%eth0]:7893"} {
		var stderr bytes.Buffer
		// Bounded: an egress that took the address would serve.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		code := Main(ctx, []string{"egress", "--listen", "127.0.0.1:0", "--audit", auditDir, "--log-listen", addr}, io.Discard, &stderr)
		cancel()
		if code != hostdwire.ExitUsage || !strings.Contains(stderr.String(), "--log-listen") || !strings.Contains(stderr.String(), "loopback") ||
			strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("--log-listen %s: exit %d, stderr %q; want exit %d and one line", addr, code, stderr.String(), hostdwire.ExitUsage)
		}
	}
}

// egress serves its audit log on its log port: a request the proxy
// refused is read there, naming its client, and a follower sees the next
// one as it is written.
func TestEgressServesItsLog(t *testing.T) {
	auditDir := filepath.Join(t.TempDir(), "audit")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"egress", "--listen", "127.0.0.1:0", "--audit", auditDir, "--log-listen", "127.0.0.1:0"}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("egress ended with %d: %s", code, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("egress did not stop")
		}
	}()
	proxy := waitFor(t, &stderr, `egress proxy serving" addr=(\S+)`)
	logAddr := waitFor(t, &stderr, `egress audit log serving" addr=(\S+)`)
	u, _ := url.Parse("http://" + proxy)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
	get := func(target string) {
		resp, err := client.Get(target)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get("http://10.0.0.1/first")

	c, err := net.Dial("tcp", logAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recs := make(chan *audit.Record, 16)
	go egresslog.Read(c, egresslog.Request{Follow: true}, func(b []byte) error {
		r, err := audit.ParseLine(b)
		if err != nil {
			return err
		}
		recs <- r
		return nil
	})
	next := func() *audit.Record {
		select {
		case r := <-recs:
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no record from the log port")
		}
		return nil
	}
	if r := next(); r.Verdict != audit.Deny || !strings.HasSuffix(r.URL, "/first") || !strings.HasPrefix(r.Client, "127.0.0.1:") {
		t.Errorf("the first record: %+v", r)
	}
	get("http://192.168.0.1/second") // another destination: not summed up with the first
	if r := next(); !strings.HasSuffix(r.URL, "/second") {
		t.Errorf("the followed record: %+v", r)
	}
}

// waitFor waits until egress's log says re, and returns its first group.
func waitFor(t *testing.T, stderr *syncbuf.Buffer, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m := rx.FindStringSubmatch(stderr.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("egress never said %s: %s", re, stderr.String())
		}
	}
}
