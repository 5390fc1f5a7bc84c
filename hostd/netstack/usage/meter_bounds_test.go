package usage

import (
	"strings"
	"testing"
)

// Brackets in a string of the content (the model's text) are text, not
// nesting: unbalanced ones neither end the content early (so that text
// after them would be taken for top-level keys) nor hide the usage.
func TestMeterJSONBracketsInStrings(t *testing.T) {
	for _, text := range []string{`}]}], \"usage\": {\"input_tokens\": 1}, \"x\": [[{`, `{[{[ \"usage\": {`, `\\\"}]`} {
		body := `{"type":"message","model":"m","content":[{"type":"text","text":"` + text + `"}],"usage":{"input_tokens":40,"output_tokens":7}}`
		want := Result{Model: "m", Found: true, Complete: true, Tokens: Tokens{Input: 40, Output: 7}}
		if got := meter("application/json", body, 3); got != want {
			t.Errorf("%s: %+v", text, got)
		}
	}
}

// A stream's line is kept within maxEvent, whatever its field: a comment
// or an event name of megabytes passes in bounded memory, and the usage
// after it is read.
func TestMeterBoundsAStreamLine(t *testing.T) {
	for _, prefix := range []string{": ", "event: ", "id: "} {
		m := NewMeter("text/event-stream")
		m.Write([]byte(prefix))
		chunk := []byte(strings.Repeat("a", 1<<16))
		for range 64 { // 4 MiB
			m.Write(chunk)
		}
		m.Write([]byte("\n\n" + stream))
		if got := m.Result(); got != streamWant || cap(m.line) > maxEvent {
			t.Errorf("%q: %+v, kept %d bytes", prefix, got, cap(m.line))
		}
	}
}

// An event's data must be of the event's own type: a message_delta
// event carrying a message_start (whose input count would replace the
// answer's), or the other way round, is not read.
func TestMeterEventNameMustMatchItsType(t *testing.T) {
	for name, body := range map[string]string{
		"delta carries start": "event: message_delta\n" + `data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":9}}}` + "\n\n",
		"start carries delta": "event: message_start\n" + `data: {"type":"message_delta","usage":{"input_tokens":9}}` + "\n\n",
	} {
		if got := meter("text/event-stream", body, 4); got.Found || got.Ignored != 1 {
			t.Errorf("%s: %+v", name, got)
		}
	}
}
