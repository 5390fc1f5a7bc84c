package proxycmd

import (
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// A throttle's summary line says how many denials it stands for.
func TestFormatSummary(t *testing.T) {
	r := &audit.Record{Time: time.Now(), Kind: audit.KindTCP, Verdict: audit.Deny, Rule: "limit: 1024 flows open at once (network.max_flows)",
		Dst: "198.51.100.7:443", DurationMs: 10000, Suppressed: 4711}
	got := Format(r, false, false)
	if !strings.Contains(got, "DENY  tcp     - → 198.51.100.7:443  [limit: 1024 flows open at once (network.max_flows)]  (4711 more like it in 10s, not logged one by one)") {
		t.Fatalf("got %q", got)
	}
}
