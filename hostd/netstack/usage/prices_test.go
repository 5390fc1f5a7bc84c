package usage

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pr(in, out, cw, cr float64) Price {
	return Price{Input: in, Output: out, CacheWrite: cw, CacheRead: cr}
}

func TestBuiltinPrices(t *testing.T) {
	tb := Builtin()
	for model, want := range map[string]Price{
		"claude-sonnet-4-20250514":                  pr(3, 15, 3.75, 0.3),
		"claude-sonnet-5-5":                         pr(2, 10, 2.5, 0.1),
		"claude-opus-5-5-20260901":                  pr(4, 20, 5, 0.2),
		"claude-sonnet-4-5-20250929":                pr(3, 15, 3.75, 0.3),
		"claude-opus-4-1-20250805":                  pr(15, 75, 18.75, 1.5),
		"claude-opus-4-5":                           pr(5, 25, 6.25, 0.5),
		"claude-3-5-haiku-20241022":                 pr(0.8, 4, 1, 0.08),
		"us.anthropic.claude-haiku-4-5-20251001-v1": pr(1, 5, 1.25, 0.1),
		"claude-sonnet-4-5@20250929":                pr(3, 15, 3.75, 0.3),
	} {
		if p, known := tb.Lookup(model); !known || p != want {
			t.Errorf("%s: %+v %v, want %+v", model, p, known, want)
		}
	}
	// A model no row names is priced at the highest of each price.
	if p, known := tb.Lookup("claude-test-1"); known || p != (pr(15, 75, 18.75, 1.5)) {
		t.Errorf("unknown: %+v %v", p, known)
	}
	p, _ := tb.Lookup("claude-sonnet-4-5")
	if c := p.Cost(Tokens{Input: 1_000_000, Output: 100_000, CacheWrite: 200_000, CacheRead: 2_000_000}); math.Abs(c-(3+1.5+0.75+0.6)) > 1e-9 {
		t.Errorf("cost %v", c)
	}
	// A long prompt costs more where the row says so.
	p, _ = tb.Lookup("claude-haiku-5-5")
	short, long := p.Cost(Tokens{Input: 100_000, Output: 1000}), p.Cost(Tokens{Input: 1000, CacheRead: 100_000, Output: 1000})
	if math.Abs(short-(0.01+0.0005)) > 1e-12 || math.Abs(long-(0.0005+0.005+0.0025)) > 1e-12 {
		t.Errorf("long prompt: %v %v", short, long)
	}
}

func writePrices(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A user's file adds rows and replaces those of the same name; cache
// prices left out follow Anthropic's multiples of the input price.
func TestUsersPricesOverlayTheBuiltinOnes(t *testing.T) {
	path := writePrices(t, `{"about": "our gateway", "models": {
		"claude-sonnet-4-5": {"input": 2, "output": 10},
		"gateway-model": {"input": 0, "output": 0, "cache_write": 0, "cache_read": 0}}}`)
	tb, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := tb.Lookup("claude-sonnet-4-5-20250929"); p != (pr(2, 10, 2.5, 0.2)) {
		t.Errorf("replaced: %+v", p)
	}
	if p, known := tb.Lookup("gateway-model-v2"); !known || p != (Price{}) {
		t.Errorf("added: %+v", p)
	}
	if p, _ := tb.Lookup("claude-opus-4-1"); p.Input != 15 {
		t.Errorf("kept: %+v", p)
	}
	// The price of unknown models can be set too.
	tb, err = Load(writePrices(t, `{"models": {}, "unknown": {"input": 1, "output": 2}}`))
	if p, known := tb.Lookup("mystery"); err != nil || known || p != (pr(1, 2, 1.25, 0.1)) {
		t.Errorf("unknown: %+v %v", p, err)
	}
	// No file: the built-in table.
	if tb, err := Load(filepath.Join(t.TempDir(), "none.json")); err != nil || tb != Builtin() {
		t.Errorf("missing: %v", err)
	}
}

// Nonsense is refused in one line that names the file, where it is, and
// what to do.
func TestPricesFileRefusesNonsense(t *testing.T) {
	for body, want := range map[string]string{
		`{"models": {"m": {"input": -1, "output": 1}}}`:                    `models["m"].input is -1: want 0 to 1000`,
		`{"models": {"m": {"input": 1, "output": 1e6}}}`:                   `models["m"].output is 1e+06: want 0 to 1000`,
		`{"models": {"m": {"input": 1, "output": 1, "cache_read": -0.1}}}`: `models["m"].cache_read is -0.1`,
		`{"models": {"m": {"input": 1e400, "output": 1}}}`:                 `line 1: models.input holds number 1e400`,
		`{"models": {"m": {"input": NaN, "output": 1}}}`:                   `line 1: not valid JSON`,
		`{"models": {"m": {"input": "3", "output": 1}}}`:                   `models.input holds string`,
		`{"models": {"m": {"input": 3}}}`:                                  `models["m"] needs both "input" and "output"`,
		`{"models": {"m": {"input": 3, "output": 1, "outptu": 2}}}`:        `unknown field "outptu"`,
		`{"modles": {}}`:          `unknown field "modles"`,
		`{"models": {"m": null}}`: `models["m"] is null`,
		`{"models": {"bad name!": {"input": 3, "output": 1}}}`: `model "bad name!": a name is 1 to 128`,
		`{"models": {}} {"models": {}}`:                        `more after the table's closing brace`,
		"{\n\"models\": {\n\"m\": {\"input\": 1,, }}}":         `line 3: not valid JSON`,
		`[]`: `line 1: the file holds array where an object belongs`,
		``:   `not a price table: EOF`,
		`{"models": {"m": {"input": 1, "output": 1}}, "unknown": {"input": -2, "output": 0}}`:                               `unknown.input is -2`,
		`{"models": {"m": {"input": 1, "output": 1, "long_prompt": {"input": 2, "output": 2}}}}`:                            `models["m"].long_prompt needs "above_prompt_tokens"`,
		`{"models": {"m": {"input": 1, "output": 1, "long_prompt": {"above_prompt_tokens": 5, "input": -2, "output": 2}}}}`: `models["m"].long_prompt.input is -2`,
	} {
		path := writePrices(t, body)
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "prices file "+path+": ") ||
			!strings.HasSuffix(err.Error(), "; fix it, or remove it to use cowork's built-in prices") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	var many strings.Builder
	many.WriteString(`{"models": {`)
	for i := range maxRows + 1 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`"m` + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + `-` + strings.Repeat("1", i/26+1) + `": {"input": 1, "output": 1}`)
	}
	many.WriteString(`}}`)
	if _, err := Load(writePrices(t, many.String())); err == nil || !strings.Contains(err.Error(), "at most 256") {
		t.Errorf("many rows: %v", err)
	}
	if _, err := Load(writePrices(t, `{"about": "`+strings.Repeat("x", 70<<10)+`", "models": {}}`)); err == nil || !strings.Contains(err.Error(), "of at most 64 KiB") {
		t.Errorf("oversized: %v", err)
	}
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("a folder: %v", err)
	}
	link := filepath.Join(dir, "prices.json")
	os.Symlink("/etc/passwd", link)
	if _, err := Load(link); err == nil || !strings.Contains(err.Error(), "not a link") {
		t.Errorf("a link: %v", err)
	}
}
