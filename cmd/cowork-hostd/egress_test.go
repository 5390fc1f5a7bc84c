package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/egresspolicy"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/agentbin"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// A command line or a policy file egress cannot use is refused as a usage
// error, naming the problem, before anything is served or written.
func TestEgressRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	auditDir := filepath.Join(dir, "audit")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no --audit"},
		{[]string{"--audit", auditDir, "extra"}, "unexpected argument"},
		{[]string{"--audit", auditDir, "--audit-size", "1000"}, "--audit-size"},
		{[]string{"--audit", auditDir, "--policy", file("ports.json", `{"host_ports": [22]}`)}, "host_ports"},
		{[]string{"--audit", auditDir, "--policy", file("budget.json", `{"budget": {"daily_tokens": 5}}`)}, "budget"},
		{[]string{"--audit", auditDir, "--policy", file("unknown.json", `{"allow": ["a.example"], "alow": []}`)}, "unknown field"},
		{[]string{"--audit", auditDir, "--policy", file("broken.json", `{"allow": [`)}, "want {"},
		{[]string{"--audit", auditDir, "--policy", file("mode.json", `{"mode": "open"}`)}, "open"},
		{[]string{"--audit", auditDir, "--policy", file("big.json", `{"allow": ["`+strings.Repeat("a", egresspolicy.MaxFile)+`"]}`)}, "over"},
	} {
		var stderr bytes.Buffer
		code := Main(context.Background(), append([]string{"egress"}, c.args...), io.Discard, &stderr)
		if code != hostdwire.ExitUsage || !strings.Contains(stderr.String(), c.want) || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("egress %q: exit %d, stderr %q; want exit %d and one line naming %q", c.args, code, stderr.String(), hostdwire.ExitUsage, c.want)
		}
	}
	if _, err := os.Stat(auditDir); !os.IsNotExist(err) {
		t.Errorf("a refused command line made the audit folder: %v", err)
	}
}

// egress serves the auditing proxy on its address with the policy of its
// file: a request the policy refuses gets the proxy's 403 and a record,
// naming its client, in a log that verifies; it stops on its context's
// end, with exit 0.
func TestEgressServesThePolicy(t *testing.T) {
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.json")
	os.WriteFile(policyFile, []byte(`{"mode": "allowlist", "allow": ["allowed.example"]}`), 0o600)
	auditDir := filepath.Join(dir, "audit")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"egress", "--listen", "127.0.0.1:0", "--policy", policyFile, "--audit", auditDir}, io.Discard, &stderr)
	}()
	addrRE := regexp.MustCompile(`egress proxy serving" addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("egress did not say where it serves: %s", stderr.String())
		}
	}
	u, _ := url.Parse("http://" + addr)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
	for _, target := range []string{"http://denied.example/", fmt.Sprintf("http://%s/", addr)} {
		resp, err := client.Get(target)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s through egress: %d, want 403", target, resp.StatusCode)
		}
	}
	log := filepath.Join(auditDir, "network.jsonl")
	var denied []*audit.Record
	for deadline := time.Now().Add(10 * time.Second); len(denied) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		denied = nil
		audit.Stream(context.Background(), log, time.Time{}, false, func(r *audit.Record) error {
			if r.Kind == audit.KindHTTP && r.Verdict == audit.Deny && strings.HasPrefix(r.Client, "127.0.0.1:") {
				denied = append(denied, r)
			}
			return nil
		})
	}
	if len(denied) != 2 {
		b, _ := os.ReadFile(log)
		t.Fatalf("%d refused requests in the audit log, want 2:\n%s", len(denied), b)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("egress ended with %d on its signal: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("egress did not stop")
	}
	v, err := audit.Verify(context.Background(), log, audit.Options{Key: filepath.Join(auditDir, "audit.key"), Head: filepath.Join(auditDir, "audit.head")})
	if err != nil || !v.OK {
		t.Errorf("the egress audit log does not verify: %v %+v", err, v)
	}
}

// The egress proxy serves the agents it carries, the very bytes whose
// sha256 a cluster guest's user-data names, and no other path.
func TestEgressServesItsAgents(t *testing.T) {
	srv := httptest.NewServer(agentFiles())
	defer srv.Close()
	for _, arch := range []string{"amd64", "arm64"} {
		resp, err := http.Get(srv.URL + image.AgentDownload(arch))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, err := agentbin.Sum(arch)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s: %d, %d bytes of sha256 %x; want this build's agent, %s", arch, resp.StatusCode, len(b), sum, want)
		}
	}
	for _, p := range []string{"/", "/cowork-agent/linux-riscv64", "/cowork-agent/linux-amd64/../../etc/passwd", "/etc/passwd", image.AgentDownload("amd64") + "x"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
}
