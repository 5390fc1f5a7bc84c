package daemon

import (
	"testing"

	"github.com/coworkhq/cowork/hostd/controlpb"
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
