package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// markup is what a hostile guest puts in a host name to run script on
// the user's page, were it ever parsed as HTML.
const markup = `<img src=x onerror="document.title='owned'">`

// Every string of a record reaches the page bounded and without control
// characters or bidi overrides (the page sets them as text: markup stays
// text there, see TestThePageInChromium), and long lists are cut.
func TestEventsAreBoundedAndInert(t *testing.T) {
	a := termsafetest.Attack
	var answers []string
	for range 1000 {
		answers = append(answers, "CNAME "+a)
	}
	r := &audit.Record{Time: time.Now(), Kind: audit.KindHTTP, Verdict: audit.Deny, Name: markup + a, ClaimedName: a, ClaimedFrom: a,
		Dst: a, Method: a, URL: "http://x/" + strings.Repeat(a, 10000), Rule: a, Error: a, Session: a, RunID: a, Answers: answers,
		Secrets: []string{a}, Run: &audit.RunInfo{Command: a, What: a}}
	ev, err := newEvent("sandbox", "", a, LogNetwork, r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var strs int
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			strs++
			if len(x) > maxField+3 {
				t.Errorf("a string of %d bytes", len(x))
			}
			termsafetest.Check(t, "the event", x, false)
		case []any:
			if len(x) > maxItems {
				t.Errorf("a list of %d", len(x))
			}
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	var v map[string]any
	json.Unmarshal(b, &v)
	walk(v["record"])
	if strs < 12 {
		t.Errorf("only %d strings checked", strs)
	}
	rec := v["record"].(map[string]any)
	if name := rec["name"].(string); !strings.HasPrefix(name, markup) {
		t.Errorf("the name lost its text: %q", name)
	}
	if ans := rec["answers"].([]any); ans[len(ans)-1] != "(985 more)" {
		t.Errorf("the cut list does not say so: %v", ans[len(ans)-1])
	}
	if !termsafe.Safe(ev.Run, false) {
		t.Errorf("run id %q", ev.Run)
	}
}

// A frame is one event: its data one line, whatever the strings hold.
func TestAFrameIsOneEvent(t *testing.T) {
	fr, err := frame("record", map[string]string{"name": "a\nevent: instances\ndata: x\n\n"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(fr), "\n") != 3 || !strings.HasSuffix(string(fr), "\n\n") {
		t.Fatalf("%q", fr)
	}
}
