package instancetest

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// Hostd stands in for a running instance's hostd: it holds the instance's
// lock and serves its control socket. Its boot is the events it was given:
// ready if one is READY; otherwise the last one is as far as it gets, as
// with a guest that never reaches its agent. Stop records the request and
// then stops for real: the lock goes, and so do the sockets.
type Hostd struct {
	paths  instance.Paths
	lock   *instance.Lock
	srv    *controlwire.Server
	events []*controlwire.Event
	ending chan struct{} // closed as Stop begins: event streams end
	done   chan struct{}

	mu         sync.Mutex
	stops      []controlwire.StopRequest
	suspends   []controlwire.SuspendRequest
	suspendErr error
	gone       bool
	// standby: it holds a guest until Wake (StandingBy), which closes
	// woken and makes it ready.
	standby bool
	loading bool // a standby still loading: its status says starting
	woken   chan struct{}
	wakes   int
}

// Running starts a stand-in hostd in the test's process for the instance
// at p, ready or not (then its VM started, and nothing more); the test's
// end stops it.
func Running(t testing.TB, p instance.Paths, ready bool) *Hostd {
	t.Helper()
	phases := []controlwire.Phase{controlwire.PhaseVMStarted}
	if ready {
		phases = append(phases, controlwire.PhaseReady)
	}
	h, err := Serve(p, phases...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h
}

// StandingBy starts a stand-in hostd holding a saved guest loaded and
// paused (`cowork-hostd run --standby`): its status says standby until
// Wake, which makes it ready.
func StandingBy(t testing.TB, p instance.Paths) *Hostd {
	t.Helper()
	h, err := Serve(p)
	if err != nil {
		t.Fatal(err)
	}
	h.standby = true
	t.Cleanup(h.Stop)
	return h
}

// Loading is StandingBy for a standby still loading the guest: its
// status says starting (not standby) until Wake, which it takes all the
// same.
func Loading(t testing.TB, p instance.Paths) *Hostd {
	t.Helper()
	h := StandingBy(t, p)
	h.mu.Lock()
	h.loading = true
	h.mu.Unlock()
	return h
}

// Wakes is how often Wake was called.
func (h *Hostd) Wakes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.wakes
}

// Serve starts a stand-in hostd for the instance at p whose boot reports
// phases, in order; Stop ends it.
func Serve(p instance.Paths, phases ...controlwire.Phase) (*Hostd, error) {
	l, err := instance.TryLock(p)
	if err != nil {
		return nil, err
	}
	if err := instance.WritePid(p); err != nil {
		l.Release()
		return nil, err
	}
	ln, err := unixsock.Listen(p.HostdSock())
	if err != nil {
		l.Release()
		return nil, err
	}
	h := &Hostd{paths: p, lock: l, ending: make(chan struct{}), done: make(chan struct{}), woken: make(chan struct{})}
	for _, ph := range phases {
		h.events = append(h.events, &controlwire.Event{Phase: ph, Message: strings.ToLower(ph.String()), At: time.Now()})
	}
	h.srv = controlwire.NewServer(&control{h: h})
	go h.srv.Serve(ln)
	return h, nil
}

// Done is closed once the stand-in has stopped.
func (h *Hostd) Done() <-chan struct{} { return h.done }

func (h *Hostd) ready() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.events) > 0 && h.events[len(h.events)-1].Phase == controlwire.PhaseReady
}

// eventsNow is a copy of the events so far.
func (h *Hostd) eventsNow() []*controlwire.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*controlwire.Event(nil), h.events...)
}

// Stops is what Stop was asked, in order.
func (h *Hostd) Stops() []controlwire.StopRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]controlwire.StopRequest(nil), h.stops...)
}

// Suspends is what Suspend was asked, in order.
func (h *Hostd) Suspends() []controlwire.SuspendRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]controlwire.SuspendRequest(nil), h.suspends...)
}

// RefuseSuspend makes Suspend fail with err, the stand-in running on.
func (h *Hostd) RefuseSuspend(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.suspendErr = err
}

// Stop ends the stand-in: the calls under way get their answers (a
// stop or a suspend, which ends it, first), then the lock is released and
// the sockets removed.
func (h *Hostd) Stop() {
	h.mu.Lock()
	if h.gone {
		h.mu.Unlock()
		return
	}
	h.gone = true
	h.mu.Unlock()
	close(h.ending)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	h.srv.Shutdown(ctx)
	cancel()
	h.lock.Release()
	for _, f := range []string{h.paths.HostdSock(), h.paths.PidFile()} {
		os.Remove(f)
	}
	close(h.done)
}

type control struct {
	controlwire.Unimplemented
	h *Hostd
}

func (c *control) Status(context.Context) (*controlwire.Status, error) {
	st := &controlwire.Status{State: "running", Ready: c.h.ready(), HostdPID: os.Getpid()}
	c.h.mu.Lock()
	if c.h.standby && c.h.wakes == 0 {
		st.State = controlwire.StateStandby
		if c.h.loading {
			st.State = "starting"
		}
	}
	c.h.mu.Unlock()
	return st, nil
}

// Wake runs a standby's guest: it is ready at once.
func (c *control) Wake(context.Context) error {
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.standby {
		return controlwire.Errorf(controlwire.CodeFailedPrecondition, "not standing by")
	}
	h.wakes++
	if h.wakes == 1 {
		h.events = append(h.events,
			&controlwire.Event{Phase: controlwire.PhaseVMStarted, Message: "vm resumed", At: time.Now()},
			&controlwire.Event{Phase: controlwire.PhaseReady, Message: "ready", At: time.Now()})
		close(h.woken)
	}
	return nil
}

func (c *control) Stop(_ context.Context, req controlwire.StopRequest) error {
	c.h.mu.Lock()
	c.h.stops = append(c.h.stops, req)
	c.h.mu.Unlock()
	go c.h.Stop() // after the answer, as hostd exits after its VM stopped
	return nil
}

// Suspend records the request; unless refused, it answers a saved guest
// of 300 MiB and stops, as hostd does.
func (c *control) Suspend(_ context.Context, req controlwire.SuspendRequest) (*controlwire.Suspended, error) {
	c.h.mu.Lock()
	c.h.suspends = append(c.h.suspends, req)
	err := c.h.suspendErr
	c.h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go c.h.Stop()
	return &controlwire.Suspended{Bytes: 300 << 20, TookMS: 1500}, nil
}

func (c *control) Events(ctx context.Context, send func(*controlwire.Event) error) error {
	sent := 0
	for {
		evs := c.h.eventsNow()
		for _, ev := range evs[sent:] {
			if err := send(ev); err != nil {
				return err
			}
		}
		sent = len(evs)
		if c.h.ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.h.ending:
			return nil
		case <-c.h.woken:
		}
	}
}
