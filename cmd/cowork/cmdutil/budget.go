package cmdutil

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/coworkhq/cowork/hostd/netstack/budget"
)

// ParseTokens reads a count of tokens: digits, grouped in threes by ","
// or "_" if you like, with k (thousands) or M (millions) after them:
// 200000, 200,000, 200_000, 200k, 1.5M. A separator elsewhere (1,5k: a
// decimal comma?) is refused.
func ParseTokens(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if !groupedInThrees(t) {
		return 0, errors.New("group digits in threes (200,000), and write a fraction with a point (1.5M)")
	}
	t = strings.NewReplacer(",", "", "_", "").Replace(t)
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "k") || strings.HasSuffix(t, "K"):
		mult, t = 1e3, t[:len(t)-1]
	case strings.HasSuffix(t, "M") || strings.HasSuffix(t, "m"):
		mult, t = 1e6, t[:len(t)-1]
	}
	x, err := strconv.ParseFloat(t, 64)
	n := math.Round(x * mult)
	if err != nil || strings.ContainsAny(t, "eEpPxXiInN+-") || n < 1 || n > budget.MaxTokensLimit || n != x*mult {
		return 0, fmt.Errorf("want a whole number of tokens from 1 to %s, such as 200000, 200k or 2M", budget.Tokens(budget.MaxTokensLimit))
	}
	return int64(n), nil
}

// groupedInThrees says the separators in s ("," and "_") each come
// after one to three digits and before three, in its whole part.
func groupedInThrees(s string) bool {
	whole, _, _ := strings.Cut(s, ".")
	whole = strings.TrimRight(whole, "kKmM")
	groups := strings.FieldsFunc(whole, func(r rune) bool { return r == ',' || r == '_' })
	if len(groups) <= 1 {
		return !strings.ContainsAny(s, ",_")
	}
	if strings.Count(whole, ",")+strings.Count(whole, "_") != len(groups)-1 || strings.ContainsAny(s[len(whole):], ",_") {
		return false
	}
	for i, g := range groups {
		if len(g) > 3 || i > 0 && len(g) != 3 || g == "" {
			return false
		}
	}
	return true
}

// ParseUSD reads US dollars: 5, 0.50, $1.25.
func ParseUSD(s string) (float64, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "$")
	x, err := strconv.ParseFloat(t, 64)
	if err != nil || strings.ContainsAny(t, "eEpPxXiInN+-") || x <= 0 || x > budget.MaxCostLimit {
		return 0, fmt.Errorf("want US dollars above 0 and at most %s, such as 5 or 0.50", budget.USD(budget.MaxCostLimit))
	}
	return x, nil
}
