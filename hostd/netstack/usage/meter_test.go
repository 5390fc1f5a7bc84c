package usage

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// stream is a streamed answer as the API writes it, its text quoting
// usage-like words that must not be read as the answer's.
const stream = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"usage":{"input_tokens":1200,"cache_creation_input_tokens":300,"cache_read_input_tokens":5000,"output_tokens":1}}}` + "\n\n" +
	"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
	"event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
	"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1}}\n\n"}}` + "\n\n" +
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
	"event: message_delta\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":350}}` + "\n\n" +
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

var streamWant = Result{Model: "claude-sonnet-4-5-20250929", Found: true, Complete: true,
	Tokens: Tokens{Input: 1200, Output: 350, CacheWrite: 300, CacheRead: 5000}}

// meter feeds body to a meter in pieces of n bytes.
func meter(contentType, body string, n int) Result {
	m := NewMeter(contentType)
	for len(body) > 0 {
		k := min(n, len(body))
		m.Write([]byte(body[:k]))
		body = body[k:]
	}
	return m.Result()
}

func TestMeterReadsAStream(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 1 << 20} {
		if got := meter("text/event-stream; charset=utf-8", stream, n); got != streamWant {
			t.Errorf("in pieces of %d: %+v, want %+v", n, got, streamWant)
		}
	}
	crlf := strings.ReplaceAll(stream, "\n\n", "\r\n\r\n")
	cr := strings.ReplaceAll(strings.ReplaceAll(stream, "\n\n", "\r\r"), "\nd", "\rd")
	for name, body := range map[string]string{"crlf": crlf, "cr": cr} {
		for _, n := range []int{1, 5, 1 << 20} {
			if got := meter("text/event-stream", body, n); got != streamWant {
				t.Errorf("%s in pieces of %d: %+v", name, n, got)
			}
		}
	}
}

// The counts of message_delta are the answer's totals so far (the newer
// API repeats the input counts there too): the last one of each kind wins,
// a count left out keeps the one before.
func TestMeterTakesTheLastCountOfEachKind(t *testing.T) {
	body := "event: message_start\n" + `data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1}}}` + "\n\n" +
		"event: message_delta\n" + `data: {"type":"message_delta","usage":{"output_tokens":5}}` + "\n\n" +
		"event: message_delta\n" + `data: {"type":"message_delta","usage":{"input_tokens":12,"output_tokens":9,"cache_read_input_tokens":null}}` + "\n\n"
	want := Result{Model: "m", Found: true, Tokens: Tokens{Input: 12, Output: 9}}
	if got := meter("text/event-stream", body, 3); got != want {
		t.Fatalf("%+v, want %+v", got, want)
	}
	// A stream cut after message_start counts what it said: the API bills
	// the input all the same.
	cut := body[:strings.Index(body, "event: message_delta")]
	if got := meter("text/event-stream", cut, 4); got.Tokens != (Tokens{Input: 10, Output: 1}) || !got.Found || got.Complete {
		t.Fatalf("cut: %+v", got)
	}
}

// An answer is complete only once its end is read: a stream's own
// message_stop event, a JSON answer's closing brace. An answer cut short
// may have cost more than its usage so far says (see budget).
func TestMeterSaysWhetherTheAnswerEnded(t *testing.T) {
	for name, body := range map[string]string{
		"no stop":          stream[:strings.Index(stream, "event: message_stop")],
		"stop cut":         strings.TrimSuffix(stream, "\n"),
		"stop of another":  stream[:strings.Index(stream, "event: message_stop")] + "event: ping\ndata: {\"type\":\"message_stop\"}\n\n",
		"stop in the text": stream[:strings.Index(stream, "event: message_stop")] + "event: content_block_delta\n" + `data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"}}` + "\n\n",
	} {
		if got := meter("text/event-stream", body, 5); got.Complete {
			t.Errorf("%s: %+v", name, got)
		}
	}
	unnamed := stream[:strings.Index(stream, "event: message_stop")] + "data: {\"type\":\"message_stop\"}\n\n"
	if got := meter("text/event-stream", unnamed, 5); !got.Complete {
		t.Errorf("unnamed stop: %+v", got)
	}
	body := `{"type":"message","model":"m","content":[{"type":"text","text":"}"}],"usage":{"input_tokens":5,"output_tokens":1}}`
	if got := meter("application/json", body[:len(body)-1], 3); got.Complete || !got.Found {
		t.Errorf("JSON cut: %+v", got)
	}
	if got := meter("application/json", body, 3); !got.Complete {
		t.Errorf("JSON: %+v", got)
	}
}

// Garbage where usage belongs is ignored (and counted), never a count:
// the relay charges such an answer at the largest seen (see budget).
func TestMeterIgnoresGarbage(t *testing.T) {
	long := strings.Repeat("x", maxEvent+10)
	for name, body := range map[string]string{
		"not JSON":            "event: message_delta\ndata: {usage\n\n",
		"float":               "event: message_delta\n" + `data: {"type":"message_delta","usage":{"output_tokens":1e30}}` + "\n\n",
		"string":              "event: message_delta\n" + `data: {"type":"message_delta","usage":{"output_tokens":"9"}}` + "\n\n",
		"type differs":        "event: message_delta\n" + `data: {"type":"message_stop","usage":{"output_tokens":9}}` + "\n\n",
		"no usage":            "event: message_delta\n" + `data: {"type":"message_delta"}` + "\n\n",
		"start no message":    "event: message_start\n" + `data: {"type":"message_start","usage":{"input_tokens":9}}` + "\n\n",
		"overlong line":       "event: message_delta\ndata: " + long + "\n\n",
		"overlong data":       "event: message_delta\n" + strings.Repeat("data: "+strings.Repeat("y", 1000)+"\n", 70) + "\n",
		"overlong then usage": "event: message_delta\ndata: " + long + "\n" + `data: {"type":"message_delta","usage":{"output_tokens":9}}` + "\n\n",
	} {
		got := meter("text/event-stream", body, 100)
		if got.Found || !got.Tokens.IsZero() || got.Ignored != 1 {
			t.Errorf("%s: %+v", name, got)
		}
	}
	// Nonsense counts are bounded, not trusted to add up.
	body := "event: message_delta\n" + `data: {"type":"message_delta","usage":{"output_tokens":-5,"input_tokens":9223372036854775807}}` + "\n\n"
	if got := meter("text/event-stream", body, 7); got.Tokens != (Tokens{Input: MaxTokens}) {
		t.Errorf("bounds: %+v", got)
	}
	// Events of other names are not read at all, however they look.
	other := "event: content_block_delta\n" + `data: {"type":"message_delta","usage":{"output_tokens":9}}` + "\n\n"
	if got := meter("text/event-stream", other, 7); got != (Result{}) {
		t.Errorf("other event: %+v", got)
	}
	// An unnamed event is read by its type, as a client would.
	unnamed := `data: {"type":"message_delta","usage":{"output_tokens":9}}` + "\n\n"
	if got := meter("text/event-stream", unnamed, 7); got.Tokens.Output != 9 {
		t.Errorf("unnamed: %+v", got)
	}
}

// A JSON answer's top-level usage is read in any piece sizes, and one in
// the content (the model's text, a tool's input) is not.
func TestMeterReadsAJSONAnswer(t *testing.T) {
	answer := map[string]any{
		"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
		"content": []any{
			map[string]any{"type": "text", "text": `{"usage":{"input_tokens":1}} "usage": {"output_tokens": 2}` + strings.Repeat("é\\\"", 3000)},
			map[string]any{"type": "tool_use", "input": map[string]any{"usage": map[string]any{"input_tokens": 3}, "model": "x"}},
		},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
			"server_tool_use": map[string]any{"web_search_requests": 0}},
	}
	b, _ := json.MarshalIndent(answer, "", "  ") // "usage" after "content", as the API writes it
	want := Result{Model: "claude-haiku-4-5", Found: true, Complete: true, Tokens: Tokens{Input: 40, Output: 7, CacheRead: 100}}
	for _, n := range []int{1, 2, 13, 4096, 1 << 20} {
		if got := meter("application/json", string(b), n); got != want {
			t.Errorf("in pieces of %d: %+v", n, got)
		}
	}
	compact, _ := json.Marshal(answer)
	if got := meter("application/json", string(compact)+"\n", 5); got != want {
		t.Errorf("compact: %+v", got)
	}
}

func TestMeterJSONRefusals(t *testing.T) {
	for name, body := range map[string]string{
		"error answer": `{"type":"error","error":{"type":"overloaded_error","message":"x"},"usage":{"input_tokens":5}}`,
		"array":        `[{"usage":{"input_tokens":5}}]`,
		"not JSON":     `usage: {"input_tokens":5}`,
		"nested only":  `{"message":{"usage":{"input_tokens":5}}}`,
		"huge usage":   `{"type":"message","usage":{"input_tokens":5,"pad":"` + strings.Repeat("p", maxValue) + `"}}`,
		"bad usage":    `{"type":"message","usage":{"input_tokens":"5"}}`,
		"other type":   `{"type":"message","usage":{"input_tokens":5}}`,
	} {
		ct := "application/json"
		if name == "other type" {
			ct = "text/plain"
		}
		if got := meter(ct, body, 3); got.Found || !got.Tokens.IsZero() {
			t.Errorf("%s: %+v", name, got)
		}
	}
	// Only what is kept is bounded: a long content passes in bounded memory.
	m := NewMeter("application/json")
	m.Write([]byte(`{"type":"message","content":[{"type":"text","text":"`))
	chunk := []byte(strings.Repeat("a", 1<<16))
	for range 256 { // 16 MiB of text
		m.Write(chunk)
	}
	m.Write([]byte(`"}],"usage":{"input_tokens":5,"output_tokens":4000000}}`))
	if got := m.Result(); got.Tokens != (Tokens{Input: 5, Output: 4000000}) || cap(m.js.buf) > maxValue {
		t.Fatalf("%+v, kept %d bytes", got, cap(m.js.buf))
	}
}

func FuzzMeter(f *testing.F) {
	f.Add(stream, 3)
	f.Add(`{"type":"message","usage":{"input_tokens":5}}`, 1)
	f.Fuzz(func(t *testing.T, body string, n int) {
		n = max(1, n%64)
		for _, ct := range []string{"text/event-stream", "application/json"} {
			whole := meter(ct, body, len(body)+1)
			if got := meter(ct, body, n); got != whole {
				t.Fatalf("%s: in pieces of %d %+v, whole %+v", ct, n, got, whole)
			}
			for _, v := range []int64{whole.Tokens.Input, whole.Tokens.Output, whole.Tokens.CacheWrite, whole.Tokens.CacheRead} {
				if v < 0 || v > MaxTokens {
					t.Fatal(fmt.Sprint(whole))
				}
			}
		}
	})
}
