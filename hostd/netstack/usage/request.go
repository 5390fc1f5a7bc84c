package usage

import (
	"encoding/json"
)

// MaxRequestHead bounds what the relay holds of a request before it
// forwards it, to read what the request says of its cost.
const MaxRequestHead = 64 << 10

// RequestScan reads a Messages API request's body as it passes, in
// bounded memory: its top-level "model" and "max_tokens" (the most
// output its answer may hold; of a key given twice, the highest), and its
// size. Write it each piece of the body, in order.
type RequestScan struct {
	j         jsonScan
	model     string
	maxTokens int64
	bytes     int64
}

// NewRequestScan starts reading a request body.
func NewRequestScan() *RequestScan {
	s := &RequestScan{}
	s.j.keys = requestKeys
	s.j.seen = s.seen
	return s
}

var requestKeys = map[string]bool{"model": true, "max_tokens": true}

// Write reads p, the next piece of the body. It never fails.
func (s *RequestScan) Write(p []byte) (int, error) {
	s.bytes += int64(len(p))
	s.j.write(p)
	return len(p), nil
}

func (s *RequestScan) seen(key string, v []byte) {
	switch key {
	case "model":
		var m string
		if json.Unmarshal(v, &m) == nil {
			s.model = clipModel(m)
		}
	case "max_tokens":
		var f float64 // a count written 5e3 or 5000.0 is one all the same
		if json.Unmarshal(v, &f) == nil && f > 0 {
			s.maxTokens = max(s.maxTokens, bound(int64(min(f, MaxTokens))))
		}
	}
}

// Model is the request's model so far; "" when none was read.
func (s *RequestScan) Model() string { return s.model }

// MaxTokens is the highest top-level max_tokens read so far; 0 when none
// was.
func (s *RequestScan) MaxTokens() int64 { return s.maxTokens }

// InputTokens estimates the request's prompt from the bytes read so far
// (or size, when larger: its Content-Length), at 4 bytes a token.
func (s *RequestScan) InputTokens(size int64) int64 {
	return bound(max(s.bytes, size) / 4)
}

// Dearest is the highest of p's prices per million tokens, a long
// prompt's included: what a token of unknown kind may cost.
func (p Price) Dearest() float64 {
	d := max(p.Input, p.Output, p.CacheWrite, p.CacheRead)
	if p.Long != nil {
		d = max(d, p.Long.Dearest())
	}
	return d
}
