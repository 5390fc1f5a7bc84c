package proxycmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
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

// A line learn mode let through says so, and why: the policy did not.
func TestFormatShowsLearnedFlows(t *testing.T) {
	r := &audit.Record{Time: time.Now(), Kind: audit.KindTCP, Verdict: audit.Allow, Learn: true, Rule: "learn: new.example is not listed",
		Name: "new.example", Dst: "198.51.100.7:443"}
	if got := Format(r, false, false); !strings.Contains(got, "LEARN tcp     new.example → 198.51.100.7:443") || !strings.Contains(got, "[learn: new.example is not listed]") {
		t.Errorf("got %q", got)
	}
	if got := Format(r, false, true); !strings.Contains(got, "\x1b[33mLEARN\x1b[0m") {
		t.Errorf("in colour: %q", got)
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

// A record the log clipped says so.
func TestFormatSaysARecordWasClipped(t *testing.T) {
	r := &audit.Record{Time: time.Now(), Kind: audit.KindHTTP, Verdict: audit.Deny, Name: "x.example", Method: "GET", URL: "http://x.example/&&&...", Rule: "deny", Clipped: true}
	if got := Format(r, true, false); !strings.HasSuffix(got, "GET http://x.example/&&&...  [deny]  (clipped: too long for the log)") {
		t.Fatalf("got %q", got)
	}
}

// hostileRecords have the attack in every field a guest (or a server it
// chose) can fill.
func hostileRecords() []*audit.Record {
	a := termsafetest.Attack
	now := time.Now()
	return []*audit.Record{
		{Time: now, Kind: audit.KindDNS, Verdict: audit.Allow, Name: a, QType: a, RCode: a, Answers: []string{"1.2.3.4", "CNAME " + a}, Rule: a},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Deny, Name: a, NameFrom: a, Dst: a, Rule: "deny " + a, Error: a,
			Owner: &audit.Owner{Exec: a, PID: 7, Comm: a, Cmd: a, ClaimedBy: a}},
		{Time: now, Kind: audit.KindHTTP, Verdict: audit.Allow, Name: a, Dst: "1.2.3.4:80", Method: a, URL: "http://x/" + a, Status: 200, Session: a, Rule: a},
		{Time: now, Kind: audit.KindICMP, Verdict: audit.Deny, Dst: a, Rule: a},
		{Time: now, Kind: a, Verdict: audit.Allow, Name: a},
	}
}

func TestFormatShowsGuestTextInert(t *testing.T) {
	for _, r := range hostileRecords() {
		for _, verbose := range []bool{false, true} {
			line := Format(r, verbose, false)
			if line == "" {
				continue
			}
			termsafetest.Check(t, "proxy "+r.Kind, line, false)
			// With colour, only the verdict's own colour codes are escapes.
			colored := Format(r, verbose, true)
			rest := colored[strings.LastIndex(colored, "\x1b[0m")+len("\x1b[0m"):]
			termsafetest.Check(t, "proxy in colour "+r.Kind, rest, false)
			if strings.Count(colored, "\x1b") != 2 {
				t.Errorf("escapes beyond the verdict's colour: %q", colored)
			}
		}
	}
}

func TestFormatJSONIsSafeAndFaithful(t *testing.T) {
	for _, r := range hostileRecords() {
		b, err := FormatJSON(r)
		if err != nil {
			t.Fatal(err)
		}
		termsafetest.Check(t, "proxy --json", string(b), false)
		got, err := audit.ParseLine(b)
		if err != nil {
			t.Fatalf("the line no longer parses: %v: %s", err, b)
		}
		plain, _ := json.Marshal(r)
		want, _ := audit.ParseLine(plain)
		if got.Name != want.Name || got.URL != want.URL || got.Rule != want.Rule {
			t.Errorf("values changed: %+v, want %+v", got, want)
		}
	}
}

func TestFormatShowsPublishedPorts(t *testing.T) {
	r := &audit.Record{Time: time.Now(), Kind: audit.KindPublish, Verdict: audit.Allow, Dst: "127.0.0.1:8000", GuestPort: 80}
	if got := Format(r, false, false); !strings.HasSuffix(got, " publish 127.0.0.1:8000 → guest port 80") {
		t.Errorf("%q", got)
	}
	r.Proto = 17
	if got := Format(r, false, false); !strings.HasSuffix(got, " publish 127.0.0.1:8000 → guest port 80/udp") {
		t.Errorf("a UDP port: %q", got)
	}
}

// A relay call's line says what its answer cost; a refusal by the budget
// says why.
func TestFormatShowsWhatACallCost(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	r := &audit.Record{Time: at, Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.anthropic.com", Session: "ab12", Method: "POST", URL: "/v1/messages", Status: 200,
		Usage: &audit.Usage{Model: "claude-sonnet-4-5", InputTokens: 1200, OutputTokens: 350, CacheReadInputTokens: 15000, CostUSD: 0.0111}}
	if got := Format(r, false, false); !strings.HasSuffix(got, "  session ab12  16,550 tokens $0.0111") {
		t.Errorf("%q", got)
	}
	if got := Format(r, true, false); !strings.HasSuffix(got, "  session ab12  16,550 tokens $0.0111 (claude-sonnet-4-5)") { // no empty []
		t.Errorf("verbose: %q", got)
	}
	d := &audit.Record{Time: at, Kind: audit.KindRelay, Verdict: audit.Deny, Name: "api.anthropic.com", Session: "ab12", Status: 402,
		Rule: "relay: budget reached", Error: "cowork: the budget of 1,000 tokens for this ask is reached (spent 1,080 tokens)"}
	if got := Format(d, false, false); !strings.HasSuffix(got, "session ab12  [relay: budget reached]  error: cowork: the budget of 1,000 tokens for this ask is reached (spent 1,080 tokens)") {
		t.Errorf("refusal: %q", got)
	}
}

// A tool call's line names the tool, its id and span, the ask's session,
// and that the stream in the guest said so; guest text stays inert.
func TestFormatShowsAToolCall(t *testing.T) {
	from := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	r := &audit.Record{Time: from.Add(1500 * time.Millisecond), Start: from, DurationMs: 1500, Kind: audit.KindTool, Verdict: audit.Allow, Session: "ab12",
		Tool: &audit.ToolCall{ID: "toolu_01", Name: "Bash", ClaimedBy: audit.ClaimedByGuest}}
	if got := Format(r, false, false); !strings.HasSuffix(got, " tool    Bash toolu_01 from 03:04:05, 1.5s  session ab12 (as claude's stream in the guest says)") {
		t.Errorf("%q", got)
	}
	r.Tool.Name = "Bash\x1b]0;owned\x07"
	if got := Format(r, false, false); strings.ContainsAny(got, "\x1b\x07") {
		t.Errorf("guest text reached the terminal: %q", got)
	}
}

// A gap in the log (records the host could not write) is one line that
// says how many and since when.
func TestFormatGap(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 5, 0, time.Local)
	got := Format(&audit.Record{Kind: audit.KindGap, Verdict: audit.Deny, Start: at.Add(-4 * time.Second), Time: at, Suppressed: 17}, false, false)
	if want := "10:00:05 GAP   17 records lost from 10:00:01: the host could not write the audit log, and refused new traffic meanwhile"; got != want {
		t.Errorf("Format:\n%s\nwant\n%s", got, want)
	}
}
