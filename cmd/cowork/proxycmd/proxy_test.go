package proxycmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// hostileRecords have the attack in every field a guest (or a server it
// chose) can fill.
func hostileRecords() []*audit.Record {
	a := termsafetest.Attack
	now := time.Now()
	return []*audit.Record{
		{Time: now, Kind: audit.KindDNS, Verdict: audit.Allow, Name: a, QType: a, RCode: a, Answers: []string{"1.2.3.4", "CNAME " + a}, Rule: a},
		{Time: now, Kind: audit.KindTCP, Verdict: audit.Deny, Name: a, NameFrom: a, Dst: a, Rule: "deny " + a, Error: a},
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
