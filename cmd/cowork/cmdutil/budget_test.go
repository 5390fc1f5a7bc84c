package cmdutil

import "testing"

func TestParseTokens(t *testing.T) {
	for in, want := range map[string]int64{"200000": 200000, "200,000": 200000, "200_000": 200000, "1,000,000": 1e6, "200k": 200000,
		"1.5M": 1500000, "2,000k": 2e6, " 12 ": 12} {
		if got, err := ParseTokens(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"1,5k", "1,5", "15,00", ",100", "100,", "1,,000", "1,0000", "1000,000", "1.5,000", "1.5M,", "0", "-5", "1e6", "abc", ""} {
		if got, err := ParseTokens(in); err == nil {
			t.Errorf("%q: %d, want an error", in, got)
		}
	}
}
