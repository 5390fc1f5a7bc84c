package proxycmd

import (
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// A flow whose SNI or Host claims another name than the one resolved
// shows the claim and the flag; an honest claim shows only with -v.
func TestFormatShowsClaimedNames(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	forged := &audit.Record{Time: at, Kind: audit.KindTCP, Verdict: audit.Allow, Name: "allowed.test", NameFrom: audit.FromDNS,
		Dst: "198.51.100.10:443", ClaimedName: "bank.example", ClaimedFrom: audit.FromSNI, NameMismatch: true}
	honest := &audit.Record{Time: at, Kind: audit.KindConnect, Verdict: audit.Allow, Name: "proxied.test", NameFrom: audit.FromProxy,
		Dst: "198.51.100.30:443", ClaimedName: "proxied.test", ClaimedFrom: audit.FromSNI}
	for _, c := range []struct {
		r        *audit.Record
		verbose  bool
		want     []string
		wantNot  []string
		colorize bool
	}{
		{forged, false, []string{"allowed.test → 198.51.100.10:443", "sni says bank.example MISMATCH"}, nil, false},
		{forged, false, []string{"sni says bank.example \x1b[33mMISMATCH\x1b[0m"}, nil, true},
		{honest, false, []string{"proxied.test → 198.51.100.30:443"}, []string{"says", "MISMATCH"}, false},
		{honest, true, []string{"sni says proxied.test"}, []string{"MISMATCH"}, false},
		{&audit.Record{Time: at, Kind: audit.KindIP, Verdict: audit.Deny, Dst: "8.8.8.8", Proto: 132, Rule: "ip protocol 132 (sctp) is not forwarded"}, false,
			[]string{"DENY  ip      protocol 132 → 8.8.8.8", "[ip protocol 132 (sctp)"}, nil, false},
	} {
		line := Format(c.r, c.verbose, c.colorize)
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%q lacks %q", line, w)
			}
		}
		for _, w := range c.wantNot {
			if strings.Contains(line, w) {
				t.Errorf("%q has %q", line, w)
			}
		}
	}
}

// A throttle's summary line says how many denials it stands for.
func TestFormatSummary(t *testing.T) {
	r := &audit.Record{Time: time.Now(), Kind: audit.KindTCP, Verdict: audit.Deny, Rule: "limit: 1024 flows open at once (network.max_flows)",
		Dst: "198.51.100.7:443", DurationMs: 10000, Suppressed: 4711}
	got := Format(r, false, false)
	if !strings.Contains(got, "DENY  tcp     - → 198.51.100.7:443  [limit: 1024 flows open at once (network.max_flows)]  (4711 more like it in 10s, not logged one by one)") {
		t.Fatalf("got %q", got)
	}
}
