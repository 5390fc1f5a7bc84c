package hostd

import (
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// events is the boot's history plus its followers: every subscriber first
// gets what already happened, then each new event, so a CLI that attaches
// late (or a second `cowork start`) sees the same story.
type events struct {
	mu      sync.Mutex
	history []*controlwire.Event
	subs    map[chan *controlwire.Event]struct{}
	closed  bool
}

func newEvents() *events { return &events{subs: map[chan *controlwire.Event]struct{}{}} }

// Bounds of the history, which the guest feeds (provisioning reports
// what it is doing every few seconds, for as long as it takes): at most
// maxPerPhase events of one phase are kept, the oldest of them dropped
// first, so the story keeps its beginning and its latest lines; and no
// text is longer than maxText bytes.
const (
	maxPerPhase = 32
	maxText     = 8 << 10
)

// emit records an event and hands it to every follower. Its text may
// quote the guest: it is made printable here (termsafe, which also makes
// it valid UTF-8, as JSON wants) and cut to maxText.
func (e *events) emit(phase controlwire.Phase, msg string, err error) {
	ev := &controlwire.Event{At: time.Now(), Phase: phase, Message: clip(termsafe.Text(msg), maxText)}
	if err != nil {
		ev.Error = clip(termsafe.Text(err.Error()), maxText)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.history = append(e.history, ev)
	e.trimLocked(phase)
	for ch := range e.subs {
		select {
		case ch <- ev:
		default: // a follower that stopped reading loses events, not hostd
		}
	}
}

// trimLocked drops the oldest event of phase when it has too many.
func (e *events) trimLocked(phase controlwire.Phase) {
	n, first := 0, -1
	for i, ev := range e.history {
		if ev.Phase == phase {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if n > maxPerPhase {
		e.history = slices.Delete(e.history, first, first+1)
	}
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// last is the most recent phase.
func (e *events) last() controlwire.Phase {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.history) == 0 {
		return controlwire.PhaseUnspecified
	}
	return e.history[len(e.history)-1].Phase
}

// subscribe returns the history so far and a channel of what follows;
// cancel ends the subscription.
func (e *events) subscribe() (past []*controlwire.Event, next <-chan *controlwire.Event, cancel func()) {
	ch := make(chan *controlwire.Event, 64)
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
