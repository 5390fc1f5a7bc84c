package netstack

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Bounds of the tool calls an ask hands in (RecordToolCalls): as many as
// `cowork ask` keeps of one run, ids and names as long as it keeps them.
const (
	MaxToolCalls    = 4096
	maxToolCallID   = 64
	maxToolCallName = 64
)

// ToolCall is one of Claude Code's tool calls in an ask, as claude's
// stream in the guest told it: its id and tool, from its tool_use's start
// to its tool_result.
type ToolCall struct {
	ID, Name string
	From, To time.Time
}

// RecordToolCalls writes the tool calls of the ask whose relay session
// is id into the audit log, a KindTool record each, marked as the
// guest's claim: `cowork proxy --ask ID` then shows the ask's flows
// beside the calls they came during. The session must be one this stack
// opened (running or ended). The calls come from the host's CLI, but
// their ids, names and times are what claude in the guest wrote: they
// are bounded and checked here, and decide nothing.
func (n *Stack) RecordToolCalls(id string, calls []ToolCall) error {
	if !n.sessions.Known(id) {
		return fmt.Errorf("no relay session %q on this instance: tool calls go with the ask that ran them", id)
	}
	if len(calls) > MaxToolCalls {
		return fmt.Errorf("%d tool calls: at most %d a run", len(calls), MaxToolCalls)
	}
	now := time.Now()
	for i, c := range calls {
		if err := checkToolCall(c, now); err != nil {
			return fmt.Errorf("tool call %d: %w", i, err)
		}
	}
	for _, c := range calls {
		n.write(&audit.Record{
			Time: c.To, Kind: audit.KindTool, Verdict: audit.Allow, Session: id,
			Start: c.From, DurationMs: float64(c.To.Sub(c.From)) / float64(time.Millisecond),
			Tool: &audit.ToolCall{ID: c.ID, Name: c.Name, ClaimedBy: audit.ClaimedByGuest},
		})
	}
	return nil
}

// checkToolCall refuses what no stream of Claude Code's holds: empty,
// long or unprintable ids and names, a span that ends before it begins,
// or one in the future.
func checkToolCall(c ToolCall, now time.Time) error {
	printable := func(s string) bool {
		return !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == unicode.ReplacementChar })
	}
	switch {
	case c.ID == "" || len(c.ID) > maxToolCallID || !printable(c.ID):
		return fmt.Errorf("id %.80q: want 1 to %d printable bytes", c.ID, maxToolCallID)
	case c.Name == "" || len(c.Name) > maxToolCallName+len("…") || !printable(c.Name):
		return fmt.Errorf("name %.80q: want 1 to %d printable bytes", c.Name, maxToolCallName)
	case c.From.IsZero() || c.To.Before(c.From):
		return errors.New("its span ends before it begins")
	case c.To.After(now.Add(time.Minute)):
		return errors.New("its span ends in the future")
	}
	return nil
}
