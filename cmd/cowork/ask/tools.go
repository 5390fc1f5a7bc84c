package ask

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// toolCalls notes when each of Claude Code's tool calls ran, as this
// process read claude's stream: from the start of its tool_use block (the
// stream's content_block_start, which comes while the model still writes
// the call's input, well before the tool can run; a subagent's call, not
// streamed, from its assistant message) to its tool_result (written once
// the tool has ended). A flow that a process under claude, other than
// claude itself, opened inside exactly one call's span was opened while
// that call ran (attribute): the likely cause, not a proven one, since a
// process a Bash call left running in the background opens its flows
// during later calls too, and the guest names the owners. The stream is
// the guest's: the calls kept, and their ids and names, are bounded.
type toolCalls struct {
	mu      sync.Mutex
	now     func() time.Time
	calls   []toolCall
	byID    map[string]int // to calls' index
	dropped int            // calls past maxToolCalls
	ended   time.Time      // the run's result: every call has ended by then
}

type toolCall struct {
	id, name string
	from, to time.Time // to: zero while it runs
}

const (
	maxToolCalls  = 4096
	maxToolIDLen  = 64
	maxToolName   = 64
	maxToolsShown = 3
)

func newToolCalls() *toolCalls {
	return &toolCalls{now: time.Now, byID: map[string]int{}}
}

// Event notes the tool calls' starts and ends in one stream event.
func (t *toolCalls) Event(e *claudecode.Event) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Type {
	case "stream_event":
		if s := e.Event; s != nil && s.Type == "content_block_start" && s.ContentBlock != nil && s.ContentBlock.Type == "tool_use" {
			t.start(s.ContentBlock.ID, s.ContentBlock.Name, now)
		}
	case "assistant":
		if e.Message != nil {
			for _, b := range e.Message.Content {
				if b.Type == "tool_use" {
					t.start(b.ID, b.Name, now)
				}
			}
		}
	case "user":
		if e.Message != nil {
			for _, b := range e.Message.Content {
				if i, ok := t.byID[b.ToolUseID]; ok && b.Type == "tool_result" && t.calls[i].to.IsZero() {
					t.calls[i].to = now
				}
			}
		}
	case "result":
		if t.ended.IsZero() {
			t.ended = now
		}
	}
}

// start notes a call's start, once; t.mu is held.
func (t *toolCalls) start(id, name string, now time.Time) {
	if id == "" || len(id) > maxToolIDLen {
		return
	}
	if _, ok := t.byID[id]; ok {
		return
	}
	if len(t.calls) >= maxToolCalls {
		t.dropped++
		return
	}
	t.byID[id] = len(t.calls)
	t.calls = append(t.calls, toolCall{id: id, name: clipName(name), from: now})
}

func clipName(s string) string {
	if len(s) > maxToolName {
		return strings.ToValidUTF8(s[:maxToolName], "") + "…"
	}
	return s
}

// export is the calls noted, as the audit log takes them: a call still
// running ends at the run's result, or at end.
func (t *toolCalls) export(end time.Time) []cowork.ToolCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]cowork.ToolCall, 0, len(t.calls))
	for _, c := range t.calls {
		to := cmp.Or(c.to, t.ended, end)
		if to.Before(c.from) {
			continue
		}
		out = append(out, cowork.ToolCall{ID: c.id, Name: c.name, From: c.from, To: to})
	}
	return out
}

// spans is the calls' spans (from, to: both in) swept once: at each time
// a span starts or ends, and in the gap after it, how many calls run
// and, when one does, which. A flow's call is then a binary search: the
// guest writes the stream and opens the flows, and a scan of every call
// for every flow would take it minutes to count.
type spans struct {
	calls   []toolCall
	points  []time.Time // sorted, without the monotonic clock (records have none)
	at, gap []running   // at points[i]; after it, before points[i+1]
}

// running is the calls running at a time: how many, and the sum of their
// indexes (the index, when one runs).
type running struct{ n, sum int }

// spans sweeps the calls; calls still running end at end (the run's
// end). t.mu is held.
func (t *toolCalls) spans(end time.Time) *spans {
	type edge struct {
		at    time.Time
		i     int
		start bool
	}
	edges := make([]edge, 0, 2*len(t.calls))
	for i, c := range t.calls {
		from, to := c.from.Round(0), cmp.Or(c.to, t.ended, end).Round(0)
		if to.Before(from) {
			continue // holds no time
		}
		edges = append(edges, edge{from, i, true}, edge{to, i, false})
	}
	slices.SortFunc(edges, func(x, y edge) int { return x.at.Compare(y.at) })
	s := &spans{calls: slices.Clone(t.calls)}
	var cur running
	for k := 0; k < len(edges); {
		p, j := edges[k].at, k
		for ; j < len(edges) && edges[j].at.Equal(p); j++ {
			if edges[j].start {
				cur.n, cur.sum = cur.n+1, cur.sum+edges[j].i
			}
		}
		s.points, s.at = append(s.points, p), append(s.at, cur)
		for _, e := range edges[k:j] {
			if !e.start {
				cur.n, cur.sum = cur.n-1, cur.sum-e.i
			}
		}
		s.gap = append(s.gap, cur)
		k = j
	}
	return s
}

// during is the one call whose span holds at, if exactly one does.
func (s *spans) during(at time.Time) (toolCall, bool) {
	i, found := slices.BinarySearchFunc(s.points, at, time.Time.Compare)
	var r running
	switch {
	case found:
		r = s.at[i]
	case i > 0:
		r = s.gap[i-1]
	}
	if r.n != 1 {
		return toolCall{}, false
	}
	return s.calls[r.sum], true
}

// toolTally counts the flows the processes under the ask's claude opened
// while each tool call ran: a record at a time (add), then one line.
type toolTally struct {
	spans     *spans
	id        string // the ask's
	claudePID int    // claude's own flows are its, not a tool's (0: unknown)
	by        map[string]*callFlows
	outside   int
}

type callFlows struct {
	call          toolCall
	flows, denied int
}

// tally starts counting the flows of the ask of id, against the calls
// noted so far; end is the run's end.
func (t *toolCalls) tally(id string, claudePID int, end time.Time) *toolTally {
	t.mu.Lock()
	defer t.mu.Unlock()
	return &toolTally{spans: t.spans(end), id: id, claudePID: claudePID, by: map[string]*callFlows{}}
}

// add counts r if it is a flow (not an API call) of a process under the
// ask's claude, as the guest says, other than claude.
func (a *toolTally) add(r *audit.Record) {
	if r.Kind == audit.KindRelay || !r.OfExec(a.id) || a.claudePID > 0 && r.Owner.PID == a.claudePID {
		return
	}
	at := r.Start
	if at.IsZero() {
		at = r.Time // a DNS query
	}
	c, ok := a.spans.during(at)
	if !ok {
		a.outside++
		return
	}
	n := a.by[c.id] // at most maxToolCalls
	if n == nil {
		n = &callFlows{call: c}
		a.by[c.id] = n
	}
	n.flows++
	if r.Verdict == audit.Deny {
		n.denied++
	}
}

// line is the calls with the most flows, and how many flows fell in no
// call or in several; "" when none fell in one.
func (a *toolTally) line() string {
	if len(a.by) == 0 {
		return ""
	}
	ids := slices.SortedFunc(maps.Keys(a.by), func(x, y string) int {
		return cmp.Or(a.by[y].flows-a.by[x].flows, a.by[x].call.from.Compare(a.by[y].call.from))
	})
	var parts []string
	for _, id := range ids[:min(len(ids), maxToolsShown)] {
		n := a.by[id]
		p := fmt.Sprintf("%s %s %d", n.call.name, n.call.id, n.flows)
		if n.denied > 0 {
			p += fmt.Sprintf(" (%d denied)", n.denied)
		}
		parts = append(parts, p)
	}
	line := "flows while a tool call ran (as the guest reports): " + strings.Join(parts, ", ")
	if more := len(ids) - maxToolsShown; more > 0 {
		line += fmt.Sprintf(", and %d more calls", more)
	}
	if a.outside > 0 {
		line += fmt.Sprintf("; %d in no call or in several at once", a.outside)
	}
	return termsafe.Line(line)
}

// toolCallRecorder is what recordToolCalls hands the calls to: the
// instance's hostd (cowork.Client).
type toolCallRecorder interface {
	RecordToolCalls(ctx context.Context, id string, calls []cowork.ToolCall) error
}

// recordToolCalls writes the run's tool calls into the audit log, however
// the run ended (a Ctrl-C included), and says on errOut when it could
// not; a hostd older than the call is passed over in silence.
func recordToolCalls(ctx context.Context, errOut io.Writer, to toolCallRecorder, id string, calls []cowork.ToolCall) {
	if len(calls) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := to.RecordToolCalls(ctx, id, calls)
	if err != nil && controlwire.CodeOf(err) != controlwire.CodeUnimplemented {
		fmt.Fprintln(errOut, termsafe.Line("cowork: warning: the run's tool calls are not in the audit log: "+err.Error()))
	}
}
