package machine

import (
	"errors"
	"sync"
	"testing"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// check asserts the whole visible state of l.
func check(t *testing.T, l *Lifecycle, state State, done bool, err error) {
	t.Helper()
	if got := l.State(); got != state {
		t.Errorf("State() = %q, want %q", got, state)
	}
	if got := closed(l.Done()); got != done {
		t.Errorf("Done closed = %v, want %v", got, done)
	}
	if got := l.Err(); !errors.Is(got, err) || (got == nil) != (err == nil) {
		t.Errorf("Err() = %v, want %v", got, err)
	}
}

func TestLifecycleZeroValueIsStarting(t *testing.T) {
	var l Lifecycle
	check(t, &l, Starting, false, nil)
	if first, second := l.Done(), l.Done(); first != second {
		t.Error("Done gives a different channel each call")
	}
}

func TestLifecycleTransitions(t *testing.T) {
	crash := errors.New("the guest kernel panicked")
	broke := errors.New("the hypervisor broke")
	tests := []struct {
		name  string
		steps func(l *Lifecycle)
		state State
		done  bool
		err   error
	}{
		{"runs", func(l *Lifecycle) { l.SetState(Running) }, Running, false, nil},
		{"the guest stops by itself: its reason stays",
			func(l *Lifecycle) { l.SetState(Running); l.Exit(crash) }, Stopped, true, crash},
		{"asked to stop: marked Stopping, not done yet",
			func(l *Lifecycle) { l.SetState(Running); l.MarkStopping() }, Stopping, false, nil},
		{"asked to stop, then it stops: no error",
			func(l *Lifecycle) { l.SetState(Running); l.MarkStopping(); l.Exit(crash) }, Stopped, true, nil},
		{"a late Running does not undo a stop",
			func(l *Lifecycle) { l.MarkStopping(); l.SetState(Running) }, Stopping, false, nil},
		{"a late Starting does not undo a stop",
			func(l *Lifecycle) { l.SetState(Running); l.MarkStopping(); l.SetState(Starting) }, Stopping, false, nil},
		{"the hypervisor reports Stopping by itself",
			func(l *Lifecycle) { l.SetState(Running); l.SetState(Stopping) }, Stopping, false, nil},
		{"reported Stopping is not asked: the reason stays",
			func(l *Lifecycle) { l.SetState(Stopping); l.Exit(crash) }, Stopped, true, crash},
		{"SetState(Stopped) does not stop it", func(l *Lifecycle) { l.SetState(Stopped) }, Starting, false, nil},
		{"a failure counts even when asked to stop",
			func(l *Lifecycle) { l.MarkStopping(); l.Fail(broke) }, Stopped, true, broke},
		{"a start that fails", func(l *Lifecycle) { l.Fail(broke) }, Stopped, true, broke},
		{"stopped is final: a second Exit changes nothing",
			func(l *Lifecycle) { l.Exit(crash); l.Exit(broke) }, Stopped, true, crash},
		{"stopped is final: Fail after Exit changes nothing",
			func(l *Lifecycle) { l.MarkStopping(); l.Exit(crash); l.Fail(broke) }, Stopped, true, nil},
		{"stopped is final: SetState changes nothing",
			func(l *Lifecycle) { l.Exit(crash); l.SetState(Running) }, Stopped, true, crash},
		{"stopped is final: MarkStopping keeps Stopped and the reason",
			func(l *Lifecycle) { l.Exit(crash); l.MarkStopping() }, Stopped, true, crash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Lifecycle
			tt.steps(&l)
			check(t, &l, tt.state, tt.done, tt.err)
		})
	}
}

// Exit and Fail say whether they were the one that stopped the VM, which a
// backend uses to release what the VM held once.
func TestLifecycleStopsOnce(t *testing.T) {
	var l Lifecycle
	done := l.Done() // taken before the end, as hostd does
	if !l.Exit(nil) {
		t.Error("the first Exit reported the VM already stopped")
	}
	if !closed(done) {
		t.Error("Exit did not close the Done channel taken before it")
	}
	if l.Exit(nil) || l.Fail(errors.New("x")) {
		t.Error("a second Exit or Fail reported stopping the VM again")
	}
}

// A backend's watcher and hostd's Stop race; the race detector and the
// single close of Done check the locking.
func TestLifecycleConcurrent(t *testing.T) {
	var l Lifecycle
	var wg sync.WaitGroup
	stopped := make(chan bool, 3)
	for _, f := range []func(){
		func() { l.SetState(Running) },
		func() { l.MarkStopping() },
		func() { stopped <- l.Exit(errors.New("x")) },
		func() { stopped <- l.Fail(errors.New("y")) },
		func() { stopped <- l.Exit(nil) },
		func() { _, _, _ = l.State(), l.Err(), l.Done() },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
	close(stopped)
	n := 0
	for s := range stopped {
		if s {
			n++
		}
	}
	if n != 1 || l.State() != Stopped || !closed(l.Done()) {
		t.Errorf("%d calls stopped the VM, state %q; want exactly one, stopped", n, l.State())
	}
}
