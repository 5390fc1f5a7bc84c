package hostd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/internal/syncbuf"
	"github.com/coworkhq/cowork/units"
)

// patience bounds every wait of these tests: far longer than anything
// takes on a loaded machine, so that only a hostd that is stuck fails.
const patience = time.Minute

// hostdTest is one instance, on disk in a fresh COWORK_HOME, whose hostd
// the test runs in its own process on fake machines.
type hostdTest struct {
	paths instance.Paths
	cfg   *instance.Config
	host  *machinetest.Host
	opts  Options
	log   *syncbuf.Buffer
}

func newHostdTest(t *testing.T, guest machinetest.Guest) *hostdTest {
	t.Helper()
	p, cfg := instancetest.New(t, instance.Config{Arch: "arm64", CPUs: 2, Memory: 256 * units.MiB, Disk: units.GiB, Boot: instance.BootKernel})
	logs := &syncbuf.Buffer{}
	host := machinetest.NewHost(t, guest)
	return &hostdTest{
		paths: p, cfg: cfg, host: host, log: logs,
		opts: Options{Name: cfg.Name, Log: slog.New(slog.NewTextHandler(logs, nil)), NewMachine: host.NewMachine},
	}
}

// hostdRun is one run of hostd: Run in a goroutine, and a client of its
// control socket following its events from the first.
type hostdRun struct {
	t      *testing.T
	h      *hostdTest
	cancel context.CancelFunc
	done   chan error
	api    *controlwire.Client
	events *controlwire.Stream[controlwire.Event]
	seen   []*controlwire.Event
	ended  bool // the event stream ended
}

// start runs hostd until the test cancels it, or its end does.
func (h *hostdTest) start(t *testing.T) *hostdRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	return h.startCtx(t, ctx, cancel)
}

func (h *hostdTest) startCtx(t *testing.T, ctx context.Context, cancel context.CancelFunc) *hostdRun {
	t.Helper()
	r := &hostdRun{t: t, h: h, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, h.opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(patience):
			t.Errorf("hostd did not exit in %s after its context ended; its log:\n%s", patience, h.log.String())
		}
	})
	r.api = dialControl(t, h.paths.HostdSock())
	sctx, scancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(scancel)
	r.events = followWhenServed(t, sctx, r.api)
	return r
}

// dialControl is a client of the control socket sock.
func dialControl(t *testing.T, sock string) *controlwire.Client {
	t.Helper()
	c := controlwire.NewClient(sock)
	t.Cleanup(func() { c.Close() })
	return c
}

// followWhenServed follows the events of a hostd whose control socket
// may not be there yet: hostd makes it in a moment.
func followWhenServed(t *testing.T, ctx context.Context, api *controlwire.Client) *controlwire.Stream[controlwire.Event] {
	t.Helper()
	for {
		stream, err := api.Events(ctx)
		if err == nil {
			return stream
		}
		if !errors.Is(err, controlwire.ErrUnavailable) || ctx.Err() != nil {
			t.Fatalf("follow the events: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// until reads events up to the first of phase, and returns every event
// seen so far; it fails the test if the stream ends first.
func (r *hostdRun) until(phase controlwire.Phase) []*controlwire.Event {
	r.t.Helper()
	for !r.ended {
		if n := len(r.seen); n > 0 && r.seen[n-1].Phase == phase {
			return r.seen
		}
		r.next()
	}
	r.t.Fatalf("the events ended before %s: %v\nhostd's log:\n%s", phase, phases(r.seen), r.h.log.String())
	return nil
}

// all reads the events to the stream's end (hostd's exit).
func (r *hostdRun) all() []*controlwire.Event {
	r.t.Helper()
	for !r.ended {
		r.next()
	}
	return r.seen
}

func (r *hostdRun) next() {
	r.t.Helper()
	ev, err := r.events.Recv()
	if errors.Is(err, io.EOF) {
		r.ended = true
		return
	}
	if err != nil {
		r.t.Fatalf("the event stream broke after %v: %v\nhostd's log:\n%s", phases(r.seen), err, r.h.log.String())
	}
	r.seen = append(r.seen, ev)
}

// wait is what Run returned.
func (r *hostdRun) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the test's cleanup
		return err
	case <-time.After(patience):
		r.t.Fatalf("hostd did not exit in %s; its log:\n%s", patience, r.h.log.String())
		return nil
	}
}

// status asks hostd for its status.
func (r *hostdRun) status() *controlwire.Status {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	st, err := r.api.Status(ctx)
	if err != nil {
		r.t.Fatalf("status: %v", err)
	}
	return st
}

// stop is `cowork stop`: it returns once the VM is gone.
func (r *hostdRun) stop(req *controlwire.StopRequest) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := r.api.Stop(ctx, *req); err != nil {
		r.t.Fatalf("stop: %v", err)
	}
}

// ready boots hostd to READY, and returns its machine.
func (h *hostdTest) ready(t *testing.T) (*hostdRun, *machinetest.Machine) {
	t.Helper()
	r := h.start(t)
	m := h.host.Next(t)
	r.until(controlwire.PhaseReady)
	return r, m
}

func phases(evs []*controlwire.Event) []controlwire.Phase {
	var ps []controlwire.Phase
	for _, ev := range evs {
		ps = append(ps, ev.Phase)
	}
	return ps
}

// checkPhases checks the phases of evs, in order.
func checkPhases(t *testing.T, evs []*controlwire.Event, want ...controlwire.Phase) {
	t.Helper()
	if got := phases(evs); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

// checkGone checks that the hostd that ran the instance cleaned up after
// itself: no socket, pid file or run directory left, the lock free.
func checkGone(t *testing.T, p instance.Paths) {
	t.Helper()
	for _, f := range []string{p.HostdSock(), p.AgentSock(), p.PidFile(), p.Run()} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left behind (%v)", f, err)
		}
	}
	if instance.Held(p) {
		t.Error("the instance's lock is still held")
	}
}

// lastStop is what last-stop.txt says, "" when there is none.
func lastStop(t *testing.T, p instance.Paths) string {
	t.Helper()
	b, err := os.ReadFile(p.LastStop())
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
