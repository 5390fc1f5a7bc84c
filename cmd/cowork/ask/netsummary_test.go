package ask

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// The summary counts the records of its ask only (its relay calls, and
// the flows of its exec, named after its session), says that the guest
// named the exec, and shows the hosts the guest named inert.
func TestNetSummary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "network.jsonl")
	l, err := audit.Open(path, audit.Options{Key: filepath.Join(dir, "k"), Head: filepath.Join(dir, "h")})
	if err != nil {
		t.Fatal(err)
	}
	const id, other = "0123456789abcdef", "fedcba9876543210"
	now := time.Now()
	own := func(exec string) *audit.Owner {
		return &audit.Owner{Exec: exec, PID: 1, ClaimedBy: audit.ClaimedByGuest}
	}
	for _, r := range []*audit.Record{
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "api.example", BytesOut: 1000, BytesIn: 2000, Owner: own(id)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "api.example", BytesOut: 1000, BytesIn: 2000, Owner: own(id)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Deny, Name: termsafetest.Attack, Owner: own(id)},
		{Time: now, Kind: audit.KindDNS, Verdict: audit.Allow, Name: "api.example", Owner: own(id)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "other.example", BytesIn: 1 << 20, Owner: own(other)},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "nobody.example"},
		{Time: now, Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.example", Session: id},
		{Time: now, Kind: audit.KindRelay, Verdict: audit.Allow, Name: "other.example", Session: other},
	} {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	// The ask's tool calls, which it writes at its end: not hosts.
	for range 5 {
		r := &audit.Record{Time: now, Start: now.Add(-time.Second), Kind: audit.KindTool, Verdict: audit.Allow, Session: id,
			Tool: &audit.ToolCall{ID: "toolu_01", Name: "Bash", ClaimedBy: audit.ClaimedByGuest}}
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	line := netSummary(context.Background(), path, id, now.Add(-time.Minute), nil)
	if !strings.HasPrefix(line, "network (as the guest reports): 4 flows, 1 denied, 1 DNS queries") || !strings.Contains(line, "mostly api.example, ") || strings.Contains(line, ", ,") ||
		strings.Contains(line, "other.example") || strings.Contains(line, "nobody") || !strings.HasSuffix(line, "(cowork proxy --ask "+id+")") {
		t.Errorf("summary %q", line)
	}
	termsafetest.Check(t, "ask's network summary", line, false)
}
