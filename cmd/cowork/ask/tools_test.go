package ask

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/hostd/controlwire"
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
	// An API call is claude's even when the guest names another process.
	relay := &audit.Record{Kind: audit.KindRelay, Verdict: audit.Allow, Start: at(5), Session: id, Owner: own(id, 54)}
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

// The sweep finds the same call as a scan of every call would, at the
// calls' edges (both in) and between them, with calls that start or end
// together, never end, or end before they start.
func TestToolSpansMatchAScan(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		tc, now, at := clockedCalls()
		for i := range 1 + rnd.IntN(12) {
			id := fmt.Sprintf("toolu_%d", i)
			tc.start(id, "Bash", at(float64(rnd.IntN(20))))
			if rnd.IntN(4) > 0 {
				tc.calls[i].to = at(float64(rnd.IntN(24)))
			}
		}
		if round%2 == 0 {
			*now = at(float64(rnd.IntN(30)))
			tc.Event(&claudecode.Event{Type: "result"})
		}
		end := at(40)
		s := tc.spans(end)
		for x := -1.0; x < 45; x += 0.5 {
			var want toolCall
			n := 0
			for _, c := range tc.calls {
				to := cmp.Or(c.to, tc.ended, end)
				if !at(x).Before(c.from) && !at(x).After(to) {
					want, n = c, n+1
				}
			}
			got, ok := s.during(at(x))
			if ok != (n == 1) || ok && got.id != want.id {
				t.Fatalf("round %d, at %v: got %q %v; a scan finds %d calls (%q)\ncalls %+v", round, x, got.id, ok, n, want.id, tc.calls)
			}
		}
	}
}

// The guest writes the stream and opens the flows: as many calls as are
// kept, and many flows, are counted in well under a second (a scan of
// every call for every flow took seconds).
func TestToolTallyCostIsBounded(t *testing.T) {
	tc, now, at := clockedCalls()
	for i := range maxToolCalls {
		*now = at(float64(i))
		tc.Event(toolStart(fmt.Sprintf("toolu_%d", i), "Bash"))
		*now = at(float64(i) + 0.5)
		tc.Event(toolResult(fmt.Sprintf("toolu_%d", i)))
	}
	a := tc.tally("0123456789abcdef", 0, at(maxToolCalls+1))
	o := &audit.Owner{Exec: "0123456789abcdef", PID: 9}
	start := time.Now()
	const flows = 100_000
	for i := range flows {
		a.add(&audit.Record{Kind: audit.KindTCP, Start: at(float64(i%maxToolCalls) + 0.25), Owner: o})
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d flows against %d calls took %v", flows, maxToolCalls, took)
	}
	if got := a.by["toolu_0"]; got == nil || got.flows != flows/maxToolCalls+1 {
		t.Errorf("toolu_0: %+v", got)
	}
}

type fakeRecorder struct {
	id    string
	calls []cowork.ToolCall
	err   error
}

func (f *fakeRecorder) RecordToolCalls(ctx context.Context, id string, calls []cowork.ToolCall) error {
	f.id, f.calls = id, calls
	return f.err
}

// The run's tool calls go to the audit log as they ran, one still running
// ending at the run's result; a hostd that cannot take them is said, an
// older one that does not know the call is not.
func TestToolCallsGoToTheAuditLog(t *testing.T) {
	tc, now, at := clockedCalls()
	for _, step := range []struct {
		s float64
		e *claudecode.Event
	}{
		{0, toolStart("toolu_A", "Bash")},
		{10, toolResult("toolu_A")},
		{20, toolStart("toolu_B", "WebFetch")},
		{30, &claudecode.Event{Type: "result"}},
	} {
		*now = at(step.s)
		tc.Event(step.e)
	}
	calls := tc.export(at(100))
	if len(calls) != 2 || calls[0].ID != "toolu_A" || calls[0].Name != "Bash" || !calls[0].From.Equal(at(0)) || !calls[0].To.Equal(at(10)) ||
		calls[1].ID != "toolu_B" || !calls[1].To.Equal(at(30)) {
		t.Fatalf("%+v", calls)
	}
	var errOut strings.Builder
	f := &fakeRecorder{}
	recordToolCalls(context.Background(), &errOut, f, "0123456789abcdef", calls)
	if f.id != "0123456789abcdef" || len(f.calls) != 2 || errOut.Len() != 0 {
		t.Fatalf("%+v %q", f, errOut.String())
	}
	f.err = controlwire.Errorf(controlwire.CodeInvalidArgument, "tool call 0: name \"\\x1b]0;x\\a\": want 1 to 64 printable bytes")
	recordToolCalls(context.Background(), &errOut, f, "0123456789abcdef", calls)
	if !strings.Contains(errOut.String(), "warning: the run's tool calls are not in the audit log") || strings.ContainsAny(errOut.String(), "\x1b\a") {
		t.Fatalf("%q", errOut.String())
	}
	errOut.Reset()
	f.err = controlwire.Errorf(controlwire.CodeUnimplemented, "this hostd does not serve tool_calls")
	recordToolCalls(context.Background(), &errOut, f, "0123456789abcdef", calls)
	if errOut.Len() != 0 {
		t.Fatalf("an older hostd: %q", errOut.String())
	}
	f = &fakeRecorder{}
	recordToolCalls(context.Background(), &errOut, f, "0123456789abcdef", nil)
	if f.id != "" {
		t.Fatal("a run without tool calls called hostd")
	}
}
