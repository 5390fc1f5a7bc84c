package dashboard

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// Bounds on what one record puts on the page. The log already clips a
// record to 64 KiB; a table cell needs far less, and every client holds
// hundreds of records.
const (
	maxField = 512 // bytes of one string
	maxItems = 16  // items of one list (DNS answers, secrets)
)

// Log names which of an instance's logs a record came from.
const (
	LogNetwork = "network" // network.jsonl: the instance's own traffic
	LogRuns    = "runs"    // runs.jsonl: its throwaway runs' traffic, copied
)

// Event is one audit record as the page gets it: where it came from,
// and the record itself, every string made inert and bounded (record).
type Event struct {
	ID       int64  `json:"id"`
	Instance string `json:"instance"`
	// Parent and Run name the throwaway run a record belongs to: a
	// clone's own log (Instance is the clone) or its parent's runs.jsonl
	// (Instance is the parent).
	Parent string `json:"parent,omitempty"`
	Run    string `json:"run,omitempty"`
	Log    string `json:"log"`
	// Record is the audit record as the log has it, every field the
	// running cowork knows, so that a field added to audit.Record (the
	// command behind a flow, an API call's tokens) reaches the page with
	// no change here.
	Record any `json:"record"`

	time time.Time
}

// newEvent makes r the page's event; the Record's strings are clipped to
// maxField and passed through termsafe.Line: the page writes them as
// text, but a bidi override or a control character would still spoof
// what the user reads.
func newEvent(instance, parent, run, log string, r *audit.Record) (*Event, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return &Event{Instance: inert(instance), Parent: inert(parent), Run: inert(run), Log: log, Record: clean(v), time: r.Time}, nil
}

// clean bounds and neutralises every string in v, a decoded JSON value,
// and shortens its lists, saying how many items were left out.
func clean(v any) any {
	switch x := v.(type) {
	case string:
		return inert(x)
	case []any:
		if n := len(x); n > maxItems {
			x = append(x[:maxItems-1:maxItems-1], fmt.Sprintf("(%d more)", n-maxItems+1))
		}
		for i := range x {
			x[i] = clean(x[i])
		}
		return x
	case map[string]any:
		for k, e := range x {
			x[k] = clean(e)
		}
		return x
	}
	return v
}

// inert is s without control characters or bidi overrides, at most
// maxField bytes (and "...").
func inert(s string) string {
	return clipString(termsafe.Line(clipString(s, 2*maxField)), maxField)
}

// clipString is s cut to at most limit bytes at a character's start,
// with "..." when it was cut.
func clipString(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// frame is v as one server-sent event of type kind.
func frame(kind string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+len(kind)+16)
	out = append(out, "event: "...)
	out = append(out, kind...)
	out = append(out, "\ndata: "...)
	out = append(out, b...) // JSON has no raw newline: one data line
	return append(out, "\n\n"...), nil
}
