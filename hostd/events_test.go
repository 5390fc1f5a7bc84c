package hostd

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// A follower that arrives late sees the whole boot, then what comes next.
func TestEventsReplayThenFollow(t *testing.T) {
	e := newEvents()
	e.emit(controlwire.PhaseVMStarted, "vm", nil)
	e.emit(controlwire.PhaseKernel, "kernel", nil)
	past, next, cancel := e.subscribe()
	defer cancel()
	if len(past) != 2 || past[0].Phase != controlwire.PhaseVMStarted || past[1].Phase != controlwire.PhaseKernel {
		t.Fatalf("past: %v", past)
	}
	e.emit(controlwire.PhaseReady, "ready", nil)
	if ev := <-next; ev.Phase != controlwire.PhaseReady {
		t.Fatalf("next: %v", ev)
	}
	if e.last() != controlwire.PhaseReady {
		t.Fatalf("last: %v", e.last())
	}
	e.close()
	if _, ok := <-next; ok {
		t.Fatal("the subscription outlived close")
	}
	if _, next, _ := e.subscribe(); next == nil {
		t.Fatal("subscribing after close")
	} else if _, ok := <-next; ok {
		t.Fatal("a subscription after close is open")
	}
}

// A guest whose provisioning reports a new line forever cannot grow the
// history: it keeps the boot's beginning and the latest lines.
func TestEventsHistoryIsBounded(t *testing.T) {
	e := newEvents()
	e.emit(controlwire.PhaseVMStarted, "vm", nil)
	e.emit(controlwire.PhaseAgentConnected, "agent", nil)
	const n = 10000
	long := strings.Repeat("x", 2*maxText)
	for i := range n {
		e.emit(controlwire.PhaseProvisioning, fmt.Sprintf("provisioning: line %d %s", i, long[:i%(2*maxText)]), nil)
	}
	past, _, cancel := e.subscribe()
	defer cancel()
	if len(past) != 2+maxPerPhase {
		t.Fatalf("history holds %d events, want %d", len(past), 2+maxPerPhase)
	}
	if past[0].Phase != controlwire.PhaseVMStarted || past[1].Phase != controlwire.PhaseAgentConnected {
		t.Errorf("the beginning was dropped: %v %v", past[0].Phase, past[1].Phase)
	}
	if last := past[len(past)-1].Message; !strings.HasPrefix(last, fmt.Sprintf("provisioning: line %d ", n-1)) {
		t.Errorf("the latest line is missing: %.40q", last)
	}
	size := 0
	for _, ev := range past {
		size += len(ev.Message) + len(ev.Error)
	}
	if size > (2+maxPerPhase)*maxText {
		t.Errorf("history holds %d bytes of text", size)
	}
}

// Event text quoting the guest is printable and valid UTF-8, so that it
// reaches the client as hostd made it (JSON would turn a bad byte into
// U+FFFD).
func TestEventsTextIsSafe(t *testing.T) {
	e := newEvents()
	e.emit(controlwire.PhaseProvisioning, "provisioning: "+termsafetest.Attack+"\xe2\x82", errors.New("failed: "+termsafetest.Attack))
	past, _, cancel := e.subscribe()
	defer cancel()
	termsafetest.Check(t, "event message", past[0].Message, true)
	termsafetest.Check(t, "event error", past[0].Error, true)
	b, err := json.Marshal(past[0])
	var back controlwire.Event
	if err != nil || json.Unmarshal(b, &back) != nil || back.Message != past[0].Message || back.Error != past[0].Error {
		t.Errorf("the event does not go through JSON as it is: %v\n%q\n%q", err, past[0].Message, back.Message)
	}
	if got := clip("aé"+strings.Repeat("x", 10), 4); got != "a…" || !utf8.ValidString(got) {
		t.Errorf("clip cut a rune: %q", got)
	}
}
