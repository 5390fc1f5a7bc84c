package policycmd

import (
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func TestPolicyBudgetFlags(t *testing.T) {
	o, err := parse(t, "budget", "--daily-tokens", "5M", "--daily-cost", "20")
	if err != nil || o.Action != "budget" || !slices.Equal(o.Args, []string{"--daily-tokens", "5M", "--daily-cost", "20"}) {
		t.Fatalf("%+v %v", o, err)
	}
	if o, err := parse(t, "budget", "off"); err != nil || !slices.Equal(o.Args, []string{"off"}) {
		t.Fatalf("off: %+v %v", o, err)
	}
	for _, args := range [][]string{{"budget"}, {"budget", "on"}, {"budget", "off", "--daily-cost", "1"}, {"budget", "--daily-cost"}} {
		if _, err := parse(t, args...); cmdutil.ExitCode(err) != 2 {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// The daily budget is set, changed one limit at a time, shown with the
// policy, and removed; nonsense is a usage error and nothing is saved.
func TestPolicyBudget(t *testing.T) {
	instancetest.New(t, instance.Config{})
	r := policyCmd(t, "budget", "--daily-tokens", "5M", "--daily-cost", "$20")
	if r.err != nil || r.out != "mode: default\nbudget 5,000,000 tokens a day\nbudget $20.00 a day\n" {
		t.Fatalf("%+v", r)
	}
	if r := policyCmd(t, "budget", "--daily-tokens", "0"); r.err != nil {
		t.Fatal(r.err)
	}
	if got := savedPolicy(t); got.Budget == nil || *got.Budget != (policy.Budget{DailyCostUSD: 20}) {
		t.Fatalf("%+v", got.Budget)
	}
	for args, want := range map[string]string{
		"--daily-tokens lots": `--daily-tokens "lots": want a whole number of tokens from 1 to 1,000,000,000,000, such as 200000, 200k or 2M, or 0 for none`,
		"--daily-cost -3":     `--daily-cost "-3": want US dollars above 0`,
	} {
		r := policyCmd(t, append([]string{"budget"}, strings.Fields(args)...)...)
		if cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), want) {
			t.Errorf("%s: %+v", args, r)
		}
	}
	if got := savedPolicy(t); *got.Budget != (policy.Budget{DailyCostUSD: 20}) {
		t.Fatalf("a refused change was saved: %+v", got.Budget)
	}
	if r := policyCmd(t, "budget", "off"); r.err != nil || r.out != "mode: default\n" || savedPolicy(t).Budget != nil {
		t.Fatalf("off: %+v", r)
	}
}

// A budget written into the config by hand is checked when the policy
// is next used: nonsense is refused naming the field.
func TestPolicyBudgetByHand(t *testing.T) {
	instancetest.New(t, instance.Config{})
	_, err := instance.UpdateConfig(instance.DefaultName, func(c *instance.Config) error {
		c.Network.Policy.Budget = &policy.Budget{DailyTokens: -7}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := policyCmd(t, "allow", "example.com")
	if cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "budget daily_tokens -7: want a whole number of tokens") {
		t.Fatalf("%+v", r)
	}
}
