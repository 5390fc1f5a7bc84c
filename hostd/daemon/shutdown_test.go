package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/machine"
)

// fakeMachine keeps the one rule that matters here: a guest that powers
// off before the VM was asked to stop did so by itself (Err says so).
type fakeMachine struct {
	cfg machine.Config

	mu       sync.Mutex
	stopping bool
	stops    []time.Duration
	err      error
	done     chan struct{}
	once     sync.Once
}

func newFakeMachine() *fakeMachine { return &fakeMachine{done: make(chan struct{})} }

// guestOff is the guest powering off.
func (m *fakeMachine) guestOff() {
	m.mu.Lock()
	if !m.stopping {
		m.err = errors.New("the guest powered itself off")
	}
	m.mu.Unlock()
	m.once.Do(func() { close(m.done) })
}

func (m *fakeMachine) Start(context.Context) error { return nil }
func (m *fakeMachine) State() machine.State        { return machine.Running }
func (m *fakeMachine) Done() <-chan struct{}       { return m.done }
func (m *fakeMachine) DialAgent(context.Context) (net.Conn, error) {
	return nil, errors.New("no agent channel")
}

func (m *fakeMachine) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Stop is a backend's Stop: marked first, then asked, then cut.
func (m *fakeMachine) Stop(ctx context.Context, timeout time.Duration) error {
	m.mu.Lock()
	m.stopping = true
	m.stops = append(m.stops, timeout)
	m.mu.Unlock()
	if timeout > 0 && m.cfg.PowerOffWithin(ctx, timeout, func() error { return errors.New("no power button") }, m.done) == nil {
		return nil
	}
	m.once.Do(func() { close(m.done) })
	return nil
}

// fakeAgent answers Shutdown, then powers the guest off, as the real one.
type fakeAgent struct {
	agentpb.UnimplementedAgentServer
	m *fakeMachine

	mu        sync.Mutex
	shutdowns int
}

func (a *fakeAgent) Shutdown(context.Context, *agentpb.ShutdownRequest) (*agentpb.ShutdownResponse, error) {
	a.mu.Lock()
	a.shutdowns++
	a.mu.Unlock()
	go a.m.guestOff()
	return &agentpb.ShutdownResponse{}, nil
}

// daemonWithAgent is a Daemon running m, whose agent is a fakeAgent.
func daemonWithAgent(t *testing.T, m *fakeMachine) (*Daemon, *fakeAgent) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: a unix socket lives in it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{m: m}
	srv := grpc.NewServer()
	agentpb.RegisterAgentServer(srv, a)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	client, err := agentclient.New(agentclient.UnixDialer(sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	d := &Daemon{vm: m, agent: client, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	m.cfg.PowerOff = d.agentPowerOff // as boot configures the VM
	return d, a
}

// `cowork stop` goes through the VM's own Stop, which knows from the first
// moment that the stop was asked for: the guest the agent powers off is
// stopped, not "stopped unexpectedly" (which status would then show).
func TestShutdownIsAStopTheVMKnowsOf(t *testing.T) {
	m := newFakeMachine()
	d, a := daemonWithAgent(t, m)
	d.shutdown(stopRequest{timeout: time.Minute})
	<-m.Done()
	if err := m.Err(); err != nil {
		t.Errorf("after a clean stop the VM says: %v", err)
	}
	if a.shutdowns != 1 || len(m.stops) != 1 || m.stops[0] != time.Minute {
		t.Errorf("agent asked %d times, Stop called with %v; want once each, with the timeout", a.shutdowns, m.stops)
	}
}

// With force, the power is cut at once: the agent is not asked.
func TestForcedShutdownCutsThePower(t *testing.T) {
	m := newFakeMachine()
	d, a := daemonWithAgent(t, m)
	d.shutdown(stopRequest{force: true, timeout: time.Minute})
	<-m.Done()
	if err := m.Err(); err != nil || a.shutdowns != 0 || len(m.stops) != 1 || m.stops[0] != 0 {
		t.Errorf("err %v, agent asked %d times, stops %v; want no agent, one Stop(0)", err, a.shutdowns, m.stops)
	}
}
