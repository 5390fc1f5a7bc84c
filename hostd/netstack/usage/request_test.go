package usage

import (
	"strings"
	"testing"
)

// A request's top-level max_tokens is read, in any piece sizes: the
// highest of a key given twice (the endpoint may take either), never one
// in the messages' text or nesting.
func TestRequestScan(t *testing.T) {
	body := `{"model":"claude-opus-4-1","messages":[{"role":"user","content":"\"max_tokens\": 9999999 }]{"}],` +
		`"metadata":{"max_tokens":8888888},"max_tokens":1000,"stream":true,"max_tokens":5000}`
	for _, n := range []int{1, 3, len(body)} {
		s := NewRequestScan()
		for b := body; len(b) > 0; b = b[min(n, len(b)):] {
			s.Write([]byte(b[:min(n, len(b))]))
		}
		if s.Model() != "claude-opus-4-1" || s.MaxTokens() != 5000 || s.InputTokens(0) != int64(len(body)/4) || s.InputTokens(4000) != 1000 {
			t.Errorf("in pieces of %d: %q %d %d", n, s.Model(), s.MaxTokens(), s.InputTokens(0))
		}
	}
	for _, bad := range []string{`{"max_tokens":"5000"}`, `{"max_tokens":-5}`, `[{"max_tokens":5}]`, `{"x":"` + strings.Repeat("a", 10) + `max_tokens":5}`} {
		s := NewRequestScan()
		s.Write([]byte(bad))
		if s.MaxTokens() != 0 {
			t.Errorf("%s: %d", bad, s.MaxTokens())
		}
	}
}
