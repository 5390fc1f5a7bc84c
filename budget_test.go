package cowork

import (
	"context"
	"strings"
	"testing"
)

// A run's budget goes to hostd with the session, and what the run spent
// comes back once it ended.
func TestAskCarriesItsBudgetAndReportsItsUsage(t *testing.T) {
	c, f := newFakeClient(t)
	var got *Usage
	o := AskOptions{Prompt: "hi", Raw: true, ClaudeOptions: ClaudeOptions{Credential: Credential{APIKey: "sk-ant-real"},
		Budget: Budget{MaxTokensTotal: 50_000, MaxCostUSD: 1.5}, OnUsage: func(u *Usage) { got = u }}}
	if _, err := c.Ask(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	req := f.opened[0]
	f.mu.Unlock()
	if req.What != "ask" || req.MaxTokensTotal != 50_000 || req.MaxCostUSD != 1.5 {
		t.Fatalf("hostd got %+v", req)
	}
	if got == nil || got.Requests != 3 || got.Tokens() != 360 {
		t.Fatalf("usage %+v", got)
	}
	if _, err := c.Claude(context.Background(), ClaudeOptions{Credential: Credential{APIKey: "k"}}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	what := f.opened[1].What
	f.mu.Unlock()
	if what != "claude" {
		t.Fatalf("claude's session is named %q", what)
	}
	// Nonsense is refused before anything runs.
	_, err := c.Ask(context.Background(), AskOptions{Prompt: "hi", ClaudeOptions: ClaudeOptions{Credential: Credential{APIKey: "k"}, Budget: Budget{MaxTokensTotal: -3}}})
	if err == nil || !strings.Contains(err.Error(), "Budget.MaxTokensTotal -3") || len(f.opened) != 2 || len(f.starts) != 4 {
		t.Fatalf("%v", err)
	}
}
