package usage

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/coworkhq/cowork/internal/smallfile"
)

// builtinPrices is cowork's table: Anthropic's list prices when this
// build was made.
//
//go:embed prices.json
var builtinPrices []byte

// Bounds of a price table: a price over MaxPrice dollars per million
// tokens is a typo (the dearest model costs a tenth of that), and a
// table of more than maxRows rows, or a file over smallfile.Max bytes,
// is not one a user wrote by hand.
const (
	MaxPrice = 1000
	maxRows  = 256
)

// Price is a model's price in US dollars per million tokens: of input,
// output, cache writes (5-minute) and cache reads. Long, when set, is the
// price of an answer whose prompt (input, cache writes and reads) holds
// more than LongAbove tokens.
type Price struct {
	Input      float64
	Output     float64
	CacheWrite float64
	CacheRead  float64
	LongAbove  int64
	Long       *Price
}

// Cost is what t costs at p, in US dollars.
func (p Price) Cost(t Tokens) float64 {
	if p.Long != nil && t.Input+t.CacheWrite+t.CacheRead > p.LongAbove {
		p = *p.Long
	}
	return (float64(t.Input)*p.Input + float64(t.Output)*p.Output +
		float64(t.CacheWrite)*p.CacheWrite + float64(t.CacheRead)*p.CacheRead) / 1e6
}

// Table prices models by name.
type Table struct {
	rows    map[string]Price
	names   []string // longest first, for the longest prefix
	unknown Price    // a model no row names
}

// Builtin is cowork's own table. A Table is never changed once made, so
// this one is shared.
var Builtin = sync.OnceValue(func() *Table {
	t, err := parse(builtinPrices, nil)
	if err != nil {
		panic("usage: the built-in prices.json: " + err.Error())
	}
	return t
})

// Load is the built-in table with the rows of the file at path laid over
// it (a row of the same name replaced): the built-in table alone when
// there is no file. A file with anything in it that is not a price table
// is refused, with one line that names the file and what to fix.
func Load(path string) (*Table, error) {
	b, err := smallfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Builtin(), nil
	}
	fix := "; fix it, or remove it to use cowork's built-in prices"
	if err != nil {
		return nil, fmt.Errorf("prices file %s: cannot be read (%v): it must be a regular file (not a link) of at most %d KiB%s", path, unwrapPath(err), smallfile.Max>>10, fix)
	}
	t, err := parse(b, Builtin())
	if err != nil {
		return nil, fmt.Errorf("prices file %s: %w%s", path, err, fix)
	}
	return t, nil
}

// unwrapPath drops the path from a file error that would repeat it.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// The file's shape.
type tableFile struct {
	About   string          `json:"about"`
	Models  map[string]*row `json:"models"`
	Unknown *row            `json:"unknown"`
}

type row struct {
	Input      *float64 `json:"input"`
	Output     *float64 `json:"output"`
	CacheWrite *float64 `json:"cache_write"`
	CacheRead  *float64 `json:"cache_read"`
	Long       *longRow `json:"long_prompt"`
}

type longRow struct {
	Above int64 `json:"above_prompt_tokens"`
	row
}

// modelName says whether name is 1 to 128 of A-Z a-z 0-9 . _ : @ / -.
// (A regexp of it cost every cowork command 3 ms at start: {1,128}
// compiles to 128 copies.)
func modelName(name string) bool {
	if len(name) < 1 || len(name) > 128 {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("._:@/-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// parse reads a table from b, over base's rows (nil: none).
func parse(b []byte, base *Table) (*Table, error) {
	var f tableFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, jsonError(b, err)
	}
	if dec.More() {
		return nil, errors.New("more after the table's closing brace: the file must be one JSON object")
	}
	if len(f.Models) > maxRows {
		return nil, fmt.Errorf("%d models: a table holds at most %d", len(f.Models), maxRows)
	}
	t := &Table{rows: map[string]Price{}}
	if base != nil {
		for k, v := range base.rows {
			t.rows[k] = v
		}
	}
	for name, r := range f.Models {
		if !modelName(name) {
			return nil, fmt.Errorf("model %q: a name is 1 to 128 of A-Z a-z 0-9 . _ : @ / -", name)
		}
		p, err := r.price(fmt.Sprintf("models[%q]", name))
		if err != nil {
			return nil, err
		}
		t.rows[name] = p
	}
	if len(t.rows) == 0 {
		return nil, errors.New(`no models: give "models": {"NAME": {"input": 3, "output": 15}, ...}`)
	}
	for name, p := range t.rows {
		t.names = append(t.names, name)
		for _, q := range []*Price{&p, p.Long} {
			if q != nil {
				u := &t.unknown
				u.Input, u.Output, u.CacheWrite, u.CacheRead = max(u.Input, q.Input), max(u.Output, q.Output), max(u.CacheWrite, q.CacheWrite), max(u.CacheRead, q.CacheRead)
			}
		}
	}
	slices.SortFunc(t.names, func(a, b string) int { return len(b) - len(a) })
	if f.Unknown != nil {
		p, err := f.Unknown.price("unknown")
		if err != nil {
			return nil, err
		}
		t.unknown = p
	}
	return t, nil
}

// price checks a row: input and output given, every price a number from
// 0 to MaxPrice. Cache prices left out are Anthropic's multiples of the
// input price: 1.25 for writes, 0.1 for reads.
func (r *row) price(where string) (Price, error) {
	if r == nil {
		return Price{}, fmt.Errorf("%s is null: give its prices, as {\"input\": 3, \"output\": 15}", where)
	}
	if r.Input == nil || r.Output == nil {
		return Price{}, fmt.Errorf("%s needs both \"input\" and \"output\" (US dollars per million tokens)", where)
	}
	p := Price{Input: *r.Input, Output: *r.Output, CacheWrite: *r.Input * 1.25, CacheRead: *r.Input / 10}
	if r.CacheWrite != nil {
		p.CacheWrite = *r.CacheWrite
	}
	if r.CacheRead != nil {
		p.CacheRead = *r.CacheRead
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"input", p.Input}, {"output", p.Output}, {"cache_write", p.CacheWrite}, {"cache_read", p.CacheRead}} {
		if math.IsNaN(f.v) || f.v < 0 || f.v > MaxPrice {
			return Price{}, fmt.Errorf("%s.%s is %v: want 0 to %d (US dollars per million tokens)", where, f.name, f.v, MaxPrice)
		}
	}
	if r.Long != nil {
		if r.Long.Above < 1 || r.Long.Above > MaxTokens || r.Long.row.Long != nil {
			return Price{}, fmt.Errorf("%s.long_prompt needs \"above_prompt_tokens\" from 1 to %d, and its own prices (no long_prompt of its own)", where, MaxTokens)
		}
		long, err := r.Long.row.price(where + ".long_prompt")
		if err != nil {
			return Price{}, err
		}
		p.LongAbove, p.Long = r.Long.Above, &long
	}
	return p, nil
}

// jsonError says where a table is not what it should be.
func jsonError(b []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("line %d: not valid JSON: %v", 1+bytes.Count(b[:min(int(syn.Offset), len(b))], []byte("\n")), syn)
	case errors.As(err, &typ):
		field, want := typ.Field, "an object"
		if field == "" {
			field = "the file"
		}
		if typ.Type.Kind() == reflect.Float64 {
			want = "a number of US dollars per million tokens"
		} else if typ.Type.Kind() == reflect.String {
			want = "a string"
		}
		return fmt.Errorf("line %d: %s holds %s where %s belongs", 1+bytes.Count(b[:min(int(typ.Offset), len(b))], []byte("\n")), field, typ.Value, want)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return fmt.Errorf(`%s: a table has "about", "models" and "unknown", a model's row "input", "output", "cache_write", "cache_read" and "long_prompt"`, strings.TrimPrefix(err.Error(), "json: "))
	}
	return fmt.Errorf("not a price table: %v", err)
}

// Lookup is the price of a model: the row whose name is the longest
// prefix of its id (read from "claude-" on, so that a cloud's spelling,
// anthropic.claude-sonnet-4-5-v1:0 or claude-sonnet-4-5@20250929, finds
// its row), or, for a model no row names, the table's price for unknown
// models (known false): by default the highest of each price, so that a
// cost limit errs on the safe side.
func (t *Table) Lookup(model string) (p Price, known bool) {
	id := model
	if i := strings.Index(id, "claude-"); i > 0 {
		id = id[i:]
	}
	for _, name := range t.names {
		if strings.HasPrefix(id, name) || strings.HasPrefix(model, name) {
			return t.rows[name], true
		}
	}
	return t.unknown, false
}
