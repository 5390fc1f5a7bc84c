//go:build linux

package netstack

import (
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// An ask's tool calls become records of its session, marked as the
// guest's claim; a batch with anything no Claude Code stream holds, or of
// a session the stack never opened, writes nothing.
func TestRecordToolCalls(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	sess, err := tn.Sessions().OpenRequest(SessionRequest{Endpoint: "http://127.0.0.1:9", APIKey: "sk-real"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ok := ToolCall{ID: "toolu_01", Name: "Bash", From: now.Add(-2 * time.Second), To: now.Add(-time.Second)}
	for _, c := range []struct {
		session string
		calls   []ToolCall
		want    string
	}{
		{"0123456789abcdef", []ToolCall{ok}, `no relay session "0123456789abcdef"`},
		{"", []ToolCall{ok}, "no relay session"},
		{sess.ID, make([]ToolCall, MaxToolCalls+1), "at most 4096"},
		{sess.ID, []ToolCall{ok, {ID: "", Name: "Bash", From: ok.From, To: ok.To}}, "tool call 1: id"},
		{sess.ID, []ToolCall{{ID: strings.Repeat("x", 65), Name: "Bash", From: ok.From, To: ok.To}}, "id"},
		{sess.ID, []ToolCall{{ID: "toolu_\x1b[2J", Name: "Bash", From: ok.From, To: ok.To}}, "printable"},
		{sess.ID, []ToolCall{{ID: "toolu_02", Name: "Bash\n[cowork] ALLOW", From: ok.From, To: ok.To}}, "name"},
		{sess.ID, []ToolCall{{ID: "toolu_02", Name: strings.Repeat("n", 200), From: ok.From, To: ok.To}}, "name"},
		{sess.ID, []ToolCall{{ID: "toolu_02", Name: "Bash", From: ok.To, To: ok.From}}, "ends before it begins"},
		{sess.ID, []ToolCall{{ID: "toolu_02", Name: "Bash", To: ok.To}}, "ends before it begins"},
		{sess.ID, []ToolCall{{ID: "toolu_02", Name: "Bash", From: now, To: now.Add(time.Hour)}}, "in the future"},
	} {
		if err := tn.RecordToolCalls(c.session, c.calls); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %d calls: %v, want %q", c.session, len(c.calls), err, c.want)
		}
	}
	tn.Sessions().Close(sess.ID) // an ask hands its calls in as it ends
	if err := tn.RecordToolCalls(sess.ID, []ToolCall{ok}); err != nil {
		t.Fatal(err)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Kind == audit.KindTool })
	if r.Session != sess.ID || r.Tool == nil || r.Tool.ID != "toolu_01" || r.Tool.Name != "Bash" || r.Tool.ClaimedBy != audit.ClaimedByGuest ||
		!r.Start.Equal(ok.From) || !r.Time.Equal(ok.To) || r.DurationMs != 1000 || r.Verdict != audit.Allow {
		t.Fatalf("record %+v %+v", r, r.Tool)
	}
	n := 0
	tn.records(func(r *audit.Record) bool {
		if r.Kind == audit.KindTool {
			n++
		}
		return false
	})
	if n != 1 {
		t.Fatalf("%d tool records, want the one good batch's", n)
	}
	var s audit.Stats
	s.Add(r)
	if s.Flows != 0 || s.Queries != 0 {
		t.Fatalf("a tool call counted as traffic: %+v", s)
	}
}
