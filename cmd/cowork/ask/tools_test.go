package ask

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// clockedCalls is a toolCalls whose clock the test sets: at(s) is s
// seconds after t0.
func clockedCalls() (*toolCalls, *time.Time, func(float64) time.Time) {
	t0 := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	now := t0
	t := newToolCalls()
	t.now = func() time.Time { return now }
	return t, &now, func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
}

func toolStart(id, name string) *claudecode.Event {
	return &claudecode.Event{Type: "stream_event", Event: &claudecode.StreamEvent{Type: "content_block_start",
		ContentBlock: &claudecode.Block{Type: "tool_use", ID: id, Name: name}}}
}

func toolUses(sub bool, blocks ...claudecode.Block) *claudecode.Event {
	e := &claudecode.Event{Type: "assistant", Message: &claudecode.Message{Content: blocks}}
	if sub {
		parent := "toolu_parent"
		e.ParentToolUseID = &parent
	}
	return e
}

func toolResult(id string) *claudecode.Event {
	return &claudecode.Event{Type: "user", Message: &claudecode.Message{Content: []claudecode.Block{{Type: "tool_result", ToolUseID: id}}}}
}

// A flow is put on the one tool call that ran when it opened: not on two
// calls running at once, not between calls, not claude's own flows or API
// calls, not another exec's.
func TestFlowsWhileAToolCallRan(t *testing.T) {
	const id, other, claudePID = "0123456789abcdef", "fedcba9876543210", 40
	tc, now, at := clockedCalls()
	for _, step := range []struct {
		s float64
		e *claudecode.Event
	}{
		{0, toolStart("toolu_A", "Bash")},
		{1, toolUses(false, claudecode.Block{Type: "tool_use", ID: "toolu_A", Name: "Bash"})}, // the same call, complete
		{10, toolResult("toolu_A")},
		{20, toolUses(false, claudecode.Block{Type: "tool_use", ID: "toolu_B", Name: "WebFetch"}, claudecode.Block{Type: "tool_use", ID: "toolu_C", Name: "Bash"})},
		{30, toolResult("toolu_B")},
		{35, toolResult("toolu_C")},
		{36, toolResult("toolu_nothing")},
		{50, toolUses(true, claudecode.Block{Type: "tool_use", ID: "toolu_D", Name: "Grep"})}, // a subagent's, never ended
	} {
		*now = at(step.s)
		tc.Event(step.e)
	}
	own := func(exec string, pid int) *audit.Owner {
		return &audit.Owner{Exec: exec, PID: pid, ClaimedBy: audit.ClaimedByGuest}
	}
	flow := func(s float64, o *audit.Owner) *audit.Record {
		return &audit.Record{Kind: audit.KindTCP, Verdict: audit.Allow, Start: at(s), Time: at(s + 1), Owner: o}
	}
	denied := flow(7, own(id, 51))
	denied.Verdict = audit.Deny
	query := &audit.Record{Kind: audit.KindDNS, Verdict: audit.Allow, Time: at(6), Owner: own(id, 52)}
	relay := &audit.Record{Kind: audit.KindRelay, Verdict: audit.Allow, Start: at(5), Session: id, Owner: own(id, claudePID)}
	a := tc.tally(id, claudePID, at(100))
	for _, r := range []*audit.Record{
		flow(5, own(id, 50)), denied, query, // during A
		flow(5, own(id, claudePID)), relay, flow(5, own(other, 50)), flow(5, nil), // not a tool's
		flow(25, own(id, 50)), // during B and C at once
		flow(12, own(id, 50)), // between calls
		flow(60, own(id, 53)), // during D, which never ended
	} {
		a.add(r)
	}
	want := "flows while a tool call ran (as the guest reports): Bash toolu_A 3 (1 denied), Grep toolu_D 1; 2 in no call or in several at once"
	if got := a.line(); got != want {
		t.Errorf("line %q\nwant %q", got, want)
	}
	if a := tc.tally(id, claudePID, at(100)); a.line() != "" {
		t.Errorf("no flows, line %q", a.line())
	}
}

// The stream is the guest's: calls past the bound are dropped and
// counted, ids too long are ignored, a call's start is not moved by a
// second tool_use of its id, and names reach the terminal clipped and
// inert.
func TestToolCallsAreBounded(t *testing.T) {
	tc, now, at := clockedCalls()
	*now = at(0)
	tc.Event(toolStart("toolu_hostile", termsafetest.Attack+strings.Repeat("x", 200)))
	tc.Event(toolStart(strings.Repeat("i", maxToolIDLen+1), "Bash"))
	*now = at(5)
	tc.Event(toolStart("toolu_hostile", "Later"))
	for i := range maxToolCalls + 10 {
		tc.Event(toolStart(fmt.Sprintf("toolu_%d", i), "Bash"))
	}
	if len(tc.calls) != maxToolCalls || len(tc.byID) != maxToolCalls || tc.dropped != 11 {
		t.Errorf("%d calls kept, %d ids, %d dropped; want %d kept and the 11 past them dropped", len(tc.calls), len(tc.byID), tc.dropped, maxToolCalls)
	}
	if c := tc.calls[0]; c.id != "toolu_hostile" || !c.from.Equal(at(0)) || len(c.name) > maxToolName+len("…") {
		t.Errorf("the first call: %+v", c)
	}
	if _, ok := tc.byID[strings.Repeat("i", maxToolIDLen+1)]; ok {
		t.Error("an id over the bound was kept")
	}
	// Only the hostile call spans 0..1: a flow then is its.
	tc2, now2, at2 := clockedCalls()
	*now2 = at2(0)
	tc2.Event(toolStart("toolu_hostile", termsafetest.Attack))
	a := tc2.tally("0123456789abcdef", 0, at2(10))
	a.add(&audit.Record{Kind: audit.KindTCP, Start: at2(1), Owner: &audit.Owner{Exec: "0123456789abcdef", PID: 9}})
	line := a.line()
	if !strings.Contains(line, "toolu_hostile 1") {
		t.Errorf("line %q", line)
	}
	termsafetest.Check(t, "the tool calls' line", line, false)
}
