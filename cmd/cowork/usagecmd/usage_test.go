package usagecmd

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/hostd/netstack/usage"
)

// usageOf runs `cowork usage args...` and returns its stdout.
func usageOf(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	name := "box"
	err := cmdtest.Prepare(NewCmdUsage(ios, &name, nil), ios, args...).Execute()
	return out.String(), err
}

// spent writes a usage.json as hostd's ledger would: two days, three
// sessions, one stopped by its budget.
func spent(t *testing.T, p instance.Paths) {
	t.Helper()
	today := budget.DayOf(time.Now())
	yesterday := budget.DayOf(time.Now().AddDate(0, 0, -1))
	start := time.Date(2025, 6, 1, 9, 30, 0, 0, time.UTC)
	_, err := (&budget.Store{Path: p.Usage(), Lock: p.UsageLock()}).Update(func(f *budget.File) {
		f.Largest = budget.Largest{Tokens: 16000, CostUSD: 0.02}
		f.Days = []budget.Day{
			{Day: yesterday, Totals: budget.Totals{Requests: 2, Tokens: usage.Tokens{Input: 200, Output: 40}, CostUSD: 0.0012}},
			{Day: today, Totals: budget.Totals{Requests: 3, Refused: 1, Tokens: usage.Tokens{Input: 1200, Output: 350, CacheWrite: 300, CacheRead: 15000}, CostUSD: 0.0166}},
		}
		f.Sessions = []budget.Session{
			{ID: "a1", What: "ask", Started: start, Ended: start.Add(time.Minute), Totals: budget.Totals{Requests: 2, Tokens: usage.Tokens{Input: 200, Output: 40}, CostUSD: 0.0012}},
			{ID: "b2", What: "ask", Instance: "box-run-1", Started: start.Add(time.Hour), Ended: start.Add(2 * time.Hour), Limit: budget.Limit{Tokens: 2000000, CostUSD: 5},
				Totals: budget.Totals{Requests: 3, Refused: 1, Tokens: usage.Tokens{Input: 1200, Output: 350, CacheWrite: 300, CacheRead: 15000}, CostUSD: 0.0166}, Stopped: "cowork: the budget of $5.00 for this ask is reached"},
			{ID: "c3", What: "claude", Started: start.Add(3 * time.Hour)},
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUsage(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Name: "box", Network: instance.Network{Policy: policy.Policy{Budget: &policy.Budget{DailyTokens: 2_000_000, DailyCostUSD: 20}}}})
	out, err := usageOf(t)
	if err != nil || out != "box today ("+budget.DayOf(time.Now())+", UTC): 0 tokens, $0.0000 of a daily budget of 2,000,000 tokens and $20.00\nNo API calls through the relay yet.\n" {
		t.Fatalf("%q %v", out, err)
	}
	spent(t, p)
	out, err = usageOf(t)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 10 ||
		lines[0] != "box today ("+budget.DayOf(time.Now())+", UTC): 16,850 tokens, $0.0166 of a daily budget of 2,000,000 tokens and $20.00" ||
		strings.Join(strings.Fields(lines[2]), " ") != "DAY (UTC) CALLS REFUSED INPUT OUTPUT CACHE WRITE CACHE READ TOKENS COST" ||
		strings.Join(strings.Fields(lines[4]), " ") != budget.DayOf(time.Now())+" 3 1 1,200 350 300 15,000 16,850 $0.0166" ||
		strings.Join(strings.Fields(lines[6]), " ") != "STARTED (UTC) SESSION WHAT CALLS TOKENS COST BUDGET NOTE" ||
		strings.Join(strings.Fields(lines[7]), " ") != "2025-06-01 09:30 a1 ask 2 240 $0.0012 -" ||
		strings.Join(strings.Fields(lines[8]), " ") != "2025-06-01 10:30 b2 ask --rm 3 16,850 $0.0166 2,000,000 tokens, $5.00 1 refused: its budget" ||
		strings.Join(strings.Fields(lines[9]), " ") != "2025-06-01 12:30 c3 claude 0 0 $0.0000 - running, or cut short" {
		t.Fatalf("%v\n%s", err, out)
	}
	// --days and --sessions keep the newest.
	out, _ = usageOf(t, "--days", "1", "--sessions", "1")
	if strings.Count(out, "\n") != 7 || strings.Contains(out, "a1") || !strings.Contains(out, "c3") {
		t.Fatalf("%s", out)
	}
	// --json is the whole report, for scripts.
	out, err = usageOf(t, "box", "--json", "--days", "0")
	var r cowork.UsageReport
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Instance != "box" || len(r.Days) != 2 || len(r.Sessions) != 3 ||
		r.Days[1].AllTokens() != 16850 || r.DailyBudget.DailyTokens != 2_000_000 || r.Sessions[1].Limit.CostUSD != 5 || r.Largest.Tokens != 16000 ||
		!strings.Contains(out, `"cache_read_input_tokens": 15000`) {
		t.Fatalf("%v %s", err, out)
	}
}

func TestUsageRefusals(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Name: "box"})
	if _, err := usageOf(t, "--days", "-1"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("--days -1: %v", err)
	}
	if _, err := usageOf(t, "a", "b"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("two names: %v", err)
	}
	if _, err := usageOf(t, "nosuch"); err == nil {
		t.Error("an instance that does not exist")
	}
	// A usage.json that is not cowork's says what to do.
	os.WriteFile(p.Usage(), []byte("{nonsense"), 0o600)
	if _, err := usageOf(t); err == nil || !strings.Contains(err.Error(), "usage file "+p.Usage()+": unreadable") || !strings.Contains(err.Error(), "move it away") {
		t.Errorf("%v", err)
	}
}
