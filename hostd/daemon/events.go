package daemon

import (
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/controlpb"
)

// events is the boot's history plus its followers: every subscriber first
// gets what already happened, then each new event, so a CLI that attaches
// late (or a second `cowork start`) sees the same story.
type events struct {
	mu      sync.Mutex
	history []*controlpb.Event
	subs    map[chan *controlpb.Event]struct{}
	closed  bool
}

func newEvents() *events { return &events{subs: map[chan *controlpb.Event]struct{}{}} }

// emit records an event and hands it to every follower.
func (e *events) emit(phase controlpb.Phase, msg string, err error) {
	ev := &controlpb.Event{UnixNano: time.Now().UnixNano(), Phase: phase, Message: msg}
	if err != nil {
		ev.Error = err.Error()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.history = append(e.history, ev)
	for ch := range e.subs {
		select {
		case ch <- ev:
		default: // a follower that stopped reading loses events, not hostd
		}
	}
}

// last is the most recent phase.
func (e *events) last() controlpb.Phase {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.history) == 0 {
		return controlpb.Phase_PHASE_UNSPECIFIED
	}
	return e.history[len(e.history)-1].Phase
}

// subscribe returns the history so far and a channel of what follows;
// cancel ends the subscription.
func (e *events) subscribe() (past []*controlpb.Event, next <-chan *controlpb.Event, cancel func()) {
	ch := make(chan *controlpb.Event, 64)
	e.mu.Lock()
	defer e.mu.Unlock()
	past = append(past, e.history...)
	if e.closed {
		close(ch)
		return past, ch, func() {}
	}
	e.subs[ch] = struct{}{}
	return past, ch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.subs[ch]; ok {
			delete(e.subs, ch)
			close(ch)
		}
	}
}

// close ends every subscription; hostd is going away.
func (e *events) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for ch := range e.subs {
		delete(e.subs, ch)
		close(ch)
	}
}
