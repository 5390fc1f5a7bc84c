package claudecode

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// Event is one line of Claude Code's stream-json output. Only the fields
// cowork reads are decoded; Raw keeps the line.
type Event struct {
	Type      string `json:"type"` // system, stream_event, assistant, user, result
	Subtype   string `json:"subtype"`
	SessionID string `json:"session_id"`
	Model     string `json:"model"`

	Event           *StreamEvent `json:"event"`   // stream_event: a partial message
	Message         *Message     `json:"message"` // assistant, user
	ParentToolUseID *string      `json:"parent_tool_use_id"`

	// result
	DurationMs   float64 `json:"duration_ms"`
	NumTurns     int     `json:"num_turns"`
	TotalCostUSD float64 `json:"total_cost_usd"`
	IsError      bool    `json:"is_error"`
	Result       string  `json:"result"`
	// Errors says why a run failed before it could give a result (an
	// unknown --resume session, say).
	Errors []string `json:"errors"`
	// Why the run ended, e.g. "aborted_tools" after an interrupt.
	TerminalReason string `json:"terminal_reason"`

	Raw json.RawMessage `json:"-"`
}

// StreamEvent is a raw Messages API streaming event.
type StreamEvent struct {
	Type         string `json:"type"`
	Index        int    `json:"index"`
	Delta        *Delta `json:"delta"`
	ContentBlock *Block `json:"content_block"`
	Message      *struct {
		ID string `json:"id"`
	} `json:"message"`
}

// Delta is a piece of a content block.
type Delta struct {
	Type        string `json:"type"` // text_delta, input_json_delta, thinking_delta
	Text        string `json:"text"`
	PartialJSON string `json:"partial_json"`
}

// Message is an assistant or user turn.
type Message struct {
	ID      string  `json:"id"`
	Role    string  `json:"role"`
	Content []Block `json:"content"`
}

// Block is a content block: text, tool_use or tool_result.
type Block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     map[string]any  `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	IsError   bool            `json:"is_error"`
	Content   json.RawMessage `json:"content"`
}

// ResultText is a tool_result's content as text (a string, or text blocks).
func (b Block) ResultText() string {
	var s string
	if json.Unmarshal(b.Content, &s) == nil {
		return s
	}
	var parts []Block
	if json.Unmarshal(b.Content, &parts) == nil {
		var buf bytes.Buffer
		for _, p := range parts {
			buf.WriteString(p.Text)
		}
		return buf.String()
	}
	return ""
}

// maxLine bounds one stream-json line (a tool result can be large).
const maxLine = 64 << 20

// Decode reads stream-json lines from r and calls fn for each. A line that
// is not JSON (Claude Code printing a plain error) arrives as an Event of
// type "text" with the line in Result.
func Decode(r io.Reader, fn func(*Event) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(bytes.TrimSpace(line)) > 0 {
			ev := &Event{}
			if jerr := json.Unmarshal(line, ev); jerr != nil || ev.Type == "" {
				ev = &Event{Type: "text", Result: string(bytes.TrimRight(line, "\r\n"))}
			}
			ev.Raw = append(json.RawMessage(nil), bytes.TrimRight(line, "\r\n")...)
			if ferr := fn(ev); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) <= maxLine {
			line = append(line, chunk...)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}
