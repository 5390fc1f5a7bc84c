package policy

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// A daily budget in the policy is checked with the rest of it: nonsense is
// refused, naming the field and what it takes.
func TestBudgetIsChecked(t *testing.T) {
	for b, want := range map[Budget]string{
		{DailyTokens: -5}:                   "budget daily_tokens -5: want a whole number of tokens from 1 to 1,000,000,000,000, or 0 for none",
		{DailyTokens: 2e12}:                 "budget daily_tokens 2000000000000",
		{DailyCostUSD: -1}:                  "budget daily_cost_usd -1: want US dollars above 0 and at most $1,000,000.00, or 0 for none",
		{DailyCostUSD: math.NaN()}:          "budget daily_cost_usd NaN",
		{DailyCostUSD: math.Inf(1)}:         "budget daily_cost_usd +Inf",
		{DailyTokens: -1, DailyCostUSD: -1}: "daily_tokens -1",
	} {
		if _, err := Compile(Policy{Budget: &b}, hostIP, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v", b, err)
		}
	}
	p := Policy{Budget: &Budget{DailyTokens: 2_000_000, DailyCostUSD: 20}}
	if _, err := Compile(p, hostIP, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Describe(), "; "); got != "mode: default; budget 2,000,000 tokens a day; budget $20.00 a day" {
		t.Errorf("describe: %s", got)
	}
	// As the config holds it.
	var back Policy
	b, _ := json.Marshal(p)
	if json.Unmarshal(b, &back) != nil || string(b) != `{"budget":{"daily_tokens":2000000,"daily_cost_usd":20}}` || back.DailyBudget() != p.DailyBudget() {
		t.Errorf("%s", b)
	}
	if !(Policy{}).DailyBudget().IsZero() {
		t.Error("no budget is a limit")
	}
}
