// Package fakeapi is a stand-in for Anthropic's Messages API, for tests
// that run the real Claude Code: it streams scripted answers as server-sent
// events and records every request it gets.
package fakeapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Reply is one scripted answer: text, or a tool call.
type Reply struct {
	Text string
	// Tool, when set, makes the answer a tool_use block with Input.
	Tool  string
	Input map[string]any
}

// Request is what the server received.
type Request struct {
	Method, Path string
	Header       http.Header
	Body         map[string]any
	Raw          []byte
	Received     time.Time
	// Repeat is set on a Messages request whose messages an earlier one
	// already carried: a client's retry, answered as the first time.
	Repeat bool
}

// Server scripts the Messages API.
type Server struct {
	mu       sync.Mutex
	replies  []Reply
	requests []Request
	answered map[string]Reply // by the request's messages
	// Default answers when the script has run out.
	Default Reply
}

// New returns a server that answers with replies in order.
func New(replies ...Reply) *Server {
	return &Server{replies: replies, Default: Reply{Text: "(no more scripted replies)"}}
}

// Script appends replies.
func (s *Server) Script(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies = append(s.replies, replies...)
}

// Drop forgets the replies not used yet, for a test that scripted spares
// for requests that may or may not come.
func (s *Server) Drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies = nil
}

// Requests returns what was received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	req := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Raw: raw, Received: time.Now()}
	_ = json.Unmarshal(raw, &req.Body)
	messages := r.Method == http.MethodPost && r.URL.Path == "/v1/messages"
	s.mu.Lock()
	var reply Reply
	if messages {
		reply, req.Repeat = s.nextLocked(req)
	}
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	switch {
	case messages:
		s.messages(w, req, reply)
	case strings.HasSuffix(r.URL.Path, "/count_tokens"):
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"input_tokens": 10}`)
	default:
		http.NotFound(w, r)
	}
}

// nextLocked picks the answer to req: the next scripted reply, or, for messages
// answered before (Claude Code retries a request whose answer broke off,
// or falls back from streaming), the same answer again, as a model would
// give, without using up the script.
func (s *Server) nextLocked(req Request) (reply Reply, repeat bool) {
	key, _ := json.Marshal(req.Body["messages"]) // maps marshal in key order
	if r, ok := s.answered[string(key)]; ok {
		return r, true
	}
	reply = s.Default
	if len(s.replies) > 0 {
		reply, s.replies = s.replies[0], s.replies[1:]
	}
	if s.answered == nil {
		s.answered = map[string]Reply{}
	}
	s.answered[string(key)] = reply
	return reply, false
}

// messages answers one Messages API call, streaming or not.
func (s *Server) messages(w http.ResponseWriter, req Request, reply Reply) {
	model, _ := req.Body["model"].(string)
	stream, _ := req.Body["stream"].(bool)
	id := fmt.Sprintf("msg_fake_%d", time.Now().UnixNano())
	var block map[string]any
	stop := "end_turn"
	if reply.Tool != "" {
		block = map[string]any{"type": "tool_use", "id": "toolu_" + id[9:], "name": reply.Tool, "input": reply.Input}
		stop = "tool_use"
	} else {
		block = map[string]any{"type": "text", "text": reply.Text}
	}
	usage := map[string]any{"input_tokens": 100, "output_tokens": 20}
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": id, "type": "message", "role": "assistant", "model": model,
			"content": []any{block}, "stop_reason": stop, "stop_sequence": nil, "usage": usage})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	event := func(name string, data map[string]any) {
		b, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
		if fl != nil {
			fl.Flush()
		}
	}
	event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": map[string]any{"input_tokens": 100, "output_tokens": 1}}})
	if reply.Tool != "" {
		event("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
			"content_block": map[string]any{"type": "tool_use", "id": block["id"], "name": reply.Tool, "input": map[string]any{}}})
		input, _ := json.Marshal(reply.Input)
		event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
			"delta": map[string]any{"type": "input_json_delta", "partial_json": string(input)}})
	} else {
		event("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
			"content_block": map[string]any{"type": "text", "text": ""}})
		for _, word := range splitKeep(reply.Text) {
			event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
				"delta": map[string]any{"type": "text_delta", "text": word}})
		}
	}
	event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	event("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]any{"output_tokens": 20}})
	event("message_stop", map[string]any{"type": "message_stop"})
}

// splitKeep splits text into words, keeping the spaces, so it streams in pieces.
func splitKeep(s string) []string {
	var out []string
	for len(s) > 0 {
		i := strings.IndexByte(s[1:], ' ')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i+1])
		s = s[i+1:]
	}
	return out
}
