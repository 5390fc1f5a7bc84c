package hostd

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// A follower that arrives late sees the whole boot, then what comes next.
func TestEventsReplayThenFollow(t *testing.T) {
	e := newEvents()
	e.emit(controlpb.Phase_VM_STARTED, "vm", nil)
	e.emit(controlpb.Phase_KERNEL, "kernel", nil)
	past, next, cancel := e.subscribe()
	defer cancel()
	if len(past) != 2 || past[0].Phase != controlpb.Phase_VM_STARTED || past[1].Phase != controlpb.Phase_KERNEL {
		t.Fatalf("past: %v", past)
	}
	e.emit(controlpb.Phase_READY, "ready", nil)
	if ev := <-next; ev.Phase != controlpb.Phase_READY {
		t.Fatalf("next: %v", ev)
	}
	if e.last() != controlpb.Phase_READY {
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
	e.emit(controlpb.Phase_VM_STARTED, "vm", nil)
	e.emit(controlpb.Phase_AGENT_CONNECTED, "agent", nil)
	const n = 10000
	long := strings.Repeat("x", 2*maxText)
	for i := range n {
		e.emit(controlpb.Phase_PROVISIONING, fmt.Sprintf("provisioning: line %d %s", i, long[:i%(2*maxText)]), nil)
	}
	past, _, cancel := e.subscribe()
	defer cancel()
	if len(past) != 2+maxPerPhase {
		t.Fatalf("history holds %d events, want %d", len(past), 2+maxPerPhase)
	}
	if past[0].Phase != controlpb.Phase_VM_STARTED || past[1].Phase != controlpb.Phase_AGENT_CONNECTED {
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

// Event text quoting the guest is printable and valid UTF-8, which gRPC
// needs to send it at all.
func TestEventsTextIsSafe(t *testing.T) {
	e := newEvents()
	e.emit(controlpb.Phase_PROVISIONING, "provisioning: "+termsafetest.Attack+"\xe2\x82", errors.New("failed: "+termsafetest.Attack))
	past, _, cancel := e.subscribe()
	defer cancel()
	termsafetest.Check(t, "event message", past[0].Message, true)
	termsafetest.Check(t, "event error", past[0].Error, true)
	if _, err := proto.Marshal(past[0]); err != nil {
		t.Errorf("the event cannot be sent: %v", err)
	}
	if got := clip("aé"+strings.Repeat("x", 10), 4); got != "a…" || !utf8.ValidString(got) {
		t.Errorf("clip cut a rune: %q", got)
	}
}
