package instancetest

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/coworkhq/cowork/hostd/controlpb"
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
	srv    *grpc.Server
	events []*controlpb.Event
	done   chan struct{}

	mu    sync.Mutex
	stops []*controlpb.StopRequest
	gone  bool
}

// Running starts a stand-in hostd in the test's process for the instance
// at p, ready or not (then its VM started, and nothing more); the test's
// end stops it.
func Running(t testing.TB, p instance.Paths, ready bool) *Hostd {
	t.Helper()
	phases := []controlpb.Phase{controlpb.Phase_VM_STARTED}
	if ready {
		phases = append(phases, controlpb.Phase_READY)
	}
	h, err := Serve(p, phases...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h
}

// Serve starts a stand-in hostd for the instance at p whose boot reports
// phases, in order; Stop ends it.
func Serve(p instance.Paths, phases ...controlpb.Phase) (*Hostd, error) {
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
	h := &Hostd{paths: p, lock: l, srv: grpc.NewServer(), done: make(chan struct{})}
	for _, ph := range phases {
		h.events = append(h.events, &controlpb.Event{Phase: ph, Message: strings.ToLower(ph.String()), UnixNano: time.Now().UnixNano()})
	}
	controlpb.RegisterControlServer(h.srv, &control{h: h})
	go h.srv.Serve(ln)
	return h, nil
}

// Done is closed once the stand-in has stopped.
func (h *Hostd) Done() <-chan struct{} { return h.done }

func (h *Hostd) ready() bool {
	return len(h.events) > 0 && h.events[len(h.events)-1].Phase == controlpb.Phase_READY
}

// Stops is what Stop was asked, in order.
func (h *Hostd) Stops() []*controlpb.StopRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*controlpb.StopRequest(nil), h.stops...)
}

// Stop ends the stand-in: the lock is released, the sockets removed.
func (h *Hostd) Stop() {
	h.mu.Lock()
	if h.gone {
		h.mu.Unlock()
		return
	}
	h.gone = true
	h.mu.Unlock()
	h.srv.Stop()
	h.lock.Release()
	for _, f := range []string{h.paths.HostdSock(), h.paths.PidFile()} {
		os.Remove(f)
	}
	close(h.done)
}

type control struct {
	controlpb.UnimplementedControlServer
	h *Hostd
}

func (c *control) Status(context.Context, *controlpb.StatusRequest) (*controlpb.StatusResponse, error) {
	return &controlpb.StatusResponse{State: "running", Ready: c.h.ready(), HostdPid: int32(os.Getpid())}, nil
}

func (c *control) Stop(_ context.Context, req *controlpb.StopRequest) (*controlpb.StopResponse, error) {
	c.h.mu.Lock()
	c.h.stops = append(c.h.stops, req)
	c.h.mu.Unlock()
	go c.h.Stop() // after the answer, as hostd exits after its VM stopped
	return &controlpb.StopResponse{}, nil
}

func (c *control) Events(_ *controlpb.EventsRequest, stream controlpb.Control_EventsServer) error {
	for _, ev := range c.h.events {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	if c.h.ready() {
		return nil
	}
	select {
	case <-stream.Context().Done():
	case <-c.h.done:
	}
	return nil
}
