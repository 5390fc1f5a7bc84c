package budget

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Refusal is a request refused because a budget is spent. Its Error is
// what the guest's Claude Code shows, and the audit records.
type Refusal struct {
	// Daily is the instance's budget for the day; else the session's.
	Daily bool
	// Limit is the one limit reached (tokens or dollars), Spent the
	// budget's totals.
	Limit Limit
	Spent Totals
	// What the session is (ask, claude), the instance, the command that
	// changes its policy, and the day (UTC).
	What, Instance, PolicyCommand, Day string
}

func (r *Refusal) Error() string {
	var limit, spent, fix string
	if r.Limit.Tokens > 0 {
		limit, spent = Tokens(r.Limit.Tokens)+" tokens", Tokens(r.Spent.AllTokens())+" tokens"
	} else {
		limit, spent = USD(r.Limit.CostUSD), USD(r.Spent.CostUSD)
	}
	if r.Daily {
		cmd := r.PolicyCommand
		if cmd == "" {
			cmd = "cowork policy"
		}
		flag := "--daily-tokens N"
		if r.Limit.Tokens == 0 {
			flag = "--daily-cost USD"
		}
		return fmt.Sprintf("cowork: the daily budget of %s for instance %s is reached (spent %s on %s, UTC); it renews at 00:00 UTC, or raise it with `%s budget %s`",
			limit, r.Instance, spent, r.Day, cmd, flag)
	}
	what := "this session"
	switch r.What {
	case "ask":
		what = "this ask"
	case "claude":
		what = "this claude session"
	}
	fix = "raise it with --max-tokens-total N"
	if r.Limit.Tokens == 0 {
		fix = "raise it with --max-cost USD"
	}
	return fmt.Sprintf("cowork: the budget of %s for %s is reached (spent %s); %s, or leave it out for none", limit, what, spent, fix)
}

// Tokens writes a count with its thousands grouped: 1,234,567.
func Tokens(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// USD writes dollars: to the cent from $1 on, to four places below it
// (an answer often costs less than a cent).
func USD(x float64) string {
	if math.Abs(x) >= 1 {
		whole := math.Floor(x)
		cents := math.Round((x - whole) * 100)
		if cents == 100 {
			whole, cents = whole+1, 0
		}
		return fmt.Sprintf("$%s.%02d", Tokens(int64(whole)), int64(cents))
	}
	return fmt.Sprintf("$%.4f", x)
}
