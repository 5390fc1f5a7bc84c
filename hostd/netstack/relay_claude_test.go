//go:build linux

package netstack

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/fakeapi"
)

// The real Claude Code (make test installs the pinned one and sets
// COWORK_CLAUDE) runs a tool, and its next call finds the ask's budget
// spent: it shows the relay's refusal to its user at once, as the run's
// result, and does not retry it. The relay is served here on the host's
// loopback, as the guest reaches it on the gateway.
func TestClaudeCodeShowsTheBudgetRefusal(t *testing.T) {
	bin := os.Getenv("COWORK_CLAUDE")
	if bin == "" {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatal("COWORK_CLAUDE is not set (make test installs Claude Code from npm)")
		}
		t.Skip("Claude Code not installed; make test installs it")
	}
	api := fakeapi.New(
		fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "echo ran", "description": "say ran"}},
		fakeapi.Reply{Text: "never sent"},
	)
	endpoint := httptest.NewServer(api)
	defer endpoint.Close()
	tn := newTestNet(t, policy.Policy{})
	transport := &http.Transport{DialContext: tn.dial.DialContext}
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tn.relayRequest(w, r, transport, false) }))
	defer relay.Close()
	sess, err := tn.Sessions().OpenRequest(SessionRequest{Endpoint: endpoint.URL, APIKey: "sk-ant-real", What: "ask", Budget: budget.Limit{Tokens: 100}})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	c := exec.Command(bin, "-p", "--dangerously-skip-permissions", "--model", "claude-sonnet-5-5")
	c.Dir = dir
	c.Env = append(os.Environ(), "HOME="+dir, "ANTHROPIC_BASE_URL="+relay.URL, "ANTHROPIC_API_KEY="+sess.Placeholder,
		"DISABLE_TELEMETRY=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_AUTOUPDATER=1", "IS_SANDBOX=1")
	c.Stdin = strings.NewReader("run the tool")
	start := time.Now()
	out, err := c.CombinedOutput()
	took := time.Since(start)
	const want = "API Error: 402 cowork: the budget of 100 tokens for this ask is reached (spent 120 tokens); raise it with --max-tokens-total N, or leave it out for none"
	if !strings.Contains(string(out), want) {
		t.Fatalf("claude (%v, after %s) did not show the refusal:\n%s", err, took, out)
	}
	var messages int
	for _, r := range api.Requests() {
		if r.Path == "/v1/messages" {
			messages++
		}
	}
	u := sess.Usage()
	if messages != 1 || u.Requests != 1 || u.Refused < 1 || took > time.Minute {
		t.Fatalf("the API got %d Messages calls; the session %+v; claude took %s:\n%s", messages, u, took, out)
	}
	t.Logf("claude (exit %v, %s, %d refused):\n%s", err, took.Round(time.Millisecond), u.Refused, out)
}
