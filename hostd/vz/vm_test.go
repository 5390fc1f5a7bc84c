package vz

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/hostd/machine"
)

// fakeHost is a Mac on macOS 14.6 whose framework makes fakeGuests.
type fakeHost struct {
	ids     atomic.Int32 // identifiers made
	created chan *fakeGuest
	probe   error
}

func newFakeHost() *fakeHost { return &fakeHost{created: make(chan *fakeGuest, 8)} }

func (h *fakeHost) version() (string, error) { return "14.6.1", nil }
func (h *fakeHost) build() (string, error)   { return "23G93", nil }
func (h *fakeHost) arch() string             { return "arm64" }
func (h *fakeHost) limits() Limits           { return limits }
func (h *fakeHost) saveProbe() error         { return h.probe }

// checkMachineID takes what newMachineID makes: "id-N".
func (h *fakeHost) checkMachineID(data []byte) error {
	if !strings.HasPrefix(string(data), "id-") {
		return errors.New("not an identifier")
	}
	return nil
}

func (h *fakeHost) newMachineID() ([]byte, error) {
	return []byte("id-" + string(rune('0'+h.ids.Add(1)))), nil
}

func (h *fakeHost) create(p *Plan) (guest, error) {
	if len(p.MachineIDData) == 0 {
		return nil, errors.New("no machine identifier: vz would index an empty slice")
	}
	g := &fakeGuest{states: make(chan vmState, 8), canRequestStop: true, requestStopOK: true}
	h.created <- g
	return g, nil
}

// fakeGuest is a VM that runs once started and powers off when asked
// (when requestStopOK) or stopped.
type fakeGuest struct {
	states         chan vmState
	canRequestStop bool
	requestStopOK  bool

	mu                   sync.Mutex
	stops, requestStops  int
	paused, saved, ended bool
}

func (g *fakeGuest) Start() error {
	g.states <- vmState{is: vmRunning, name: "running"}
	return nil
}
func (g *fakeGuest) CanStop() bool { return true }
func (g *fakeGuest) Stop() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stops++
	g.endLocked()
	return nil
}
func (g *fakeGuest) endLocked() {
	if !g.ended {
		g.ended = true
		g.states <- vmState{is: vmStopped, name: "stopped"}
		close(g.states)
	}
}
func (g *fakeGuest) CanRequestStop() bool { return g.canRequestStop }
func (g *fakeGuest) RequestStop() (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requestStops++
	if g.requestStopOK {
		g.endLocked()
	}
	return g.requestStopOK, nil
}
func (g *fakeGuest) Pause() error { g.mu.Lock(); g.paused = true; g.mu.Unlock(); return nil }
func (g *fakeGuest) Resume() error {
	g.mu.Lock()
	g.paused = false
	g.mu.Unlock()
	return nil
}
func (g *fakeGuest) Connect(port uint32) (net.Conn, error) {
	c, _ := net.Pipe()
	return c, nil
}
func (g *fakeGuest) States() <-chan vmState { return g.states }
func (g *fakeGuest) Save(path string) error {
	g.mu.Lock()
	g.saved = true
	g.mu.Unlock()
	return os.WriteFile(path, []byte("state"), 0o600)
}
func (g *fakeGuest) Restore(string) error   { return nil }
func (g *fakeGuest) Savable() (bool, error) { return true, nil }

// vmConfig is config with real descriptors for the NIC and the console.
func vmConfig(t *testing.T) machine.Config {
	t.Helper()
	c := config(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Network = os.NewFile(uintptr(fds[0]), "vm")
	other := os.NewFile(uintptr(fds[1]), "stack")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, r)
	c.Console = w
	t.Cleanup(func() { c.Network.Close(); other.Close(); w.Close(); r.Close() })
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startVM(t *testing.T, c machine.Config) (*VM, *fakeHost, *fakeGuest) {
	t.Helper()
	h := newFakeHost()
	v, err := newVM(c, quiet(), h)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	g := <-h.created
	waitState(t, v, machine.Running)
	return v, h, g
}

func waitState(t *testing.T, v *VM, want machine.State) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); v.State() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", v.State(), want)
		}
	}
}

// The guest's power button pressed and the guest going down: Stop returns
// without cutting the power.
func TestStopPressesThePowerButton(t *testing.T) {
	v, _, g := startVM(t, vmConfig(t))
	if err := v.Stop(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	<-v.Done()
	if g.requestStops != 1 || g.stops != 0 || v.Err() != nil {
		t.Errorf("power button %d, power cut %d, err %v; want the button once, no cut", g.requestStops, g.stops, v.Err())
	}
}

// RequestStop can answer false without an error: the framework did not
// pass the press on. Stop must cut the power then, not wait out its
// timeout for a guest that was never asked.
func TestStopCutsThePowerAtOnceWhenTheButtonIsNotPassedOn(t *testing.T) {
	v, _, g := startVM(t, vmConfig(t))
	g.requestStopOK = false
	began := time.Now()
	if err := v.Stop(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Stop took %v: it waited for a guest the framework never asked", took)
	}
	if g.stops != 1 {
		t.Errorf("power cut %d times, want once", g.stops)
	}
}

// The control server's calls read the VM while Start sets it: the race
// detector (go test -race) fails this test if they are not locked.
func TestCallsDuringStartAreLocked(t *testing.T) {
	c := vmConfig(t)
	h := newFakeHost()
	v, err := newVM(c, quiet(), h)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				if conn, err := v.DialAgent(ctx); err == nil {
					conn.Close()
				}
				v.Continue(ctx)
				v.DetachShare(ctx, nil)
				cancel()
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	close(stop)
	wg.Wait()
	v.Stop(context.Background(), time.Second)
	<-v.Done()
}

// A failed launch leaves nothing open and the VM failed, with the reason.
func TestStartOnAMacTooOld(t *testing.T) {
	c := vmConfig(t)
	v, err := newVM(c, quiet(), oldHost{newFakeHost()})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Fatalf("start on macOS 12: %v", err)
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("a failed start left the VM not done")
	}
}

type oldHost struct{ *fakeHost }

func (oldHost) version() (string, error) { return "12.7", nil }

// Save pauses, writes and keeps the guest paused; a Mac without the save
// calls (Intel) refuses, saying so, with the guest running on.
func TestSaveAndAnIntelMac(t *testing.T) {
	v, _, g := startVM(t, vmConfig(t))
	dir := filepath.Join(t.TempDir(), "suspend")
	s, err := v.Save(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !g.saved || !g.paused || v.State() != machine.Paused || s.Files[0] != StateFile {
		t.Errorf("saved %v paused %v state %s files %v", g.saved, g.paused, v.State(), s.Files)
	}

	w, _, wg := startVM(t, vmConfig(t))
	w.host = intelHost{newFakeHost()}
	w.g = intelGuest{wg}
	if _, err := w.Save(context.Background(), t.TempDir()); !errors.Is(err, errNoSaveCalls) || w.State() != machine.Running {
		t.Errorf("an Intel Mac's save: %v, state %s", err, w.State())
	}
}

// intelHost and intelGuest lack the save calls, as on an Intel Mac.
type intelHost struct{ h *fakeHost }

func (i intelHost) version() (string, error)      { return i.h.version() }
func (i intelHost) build() (string, error)        { return i.h.build() }
func (i intelHost) arch() string                  { return "amd64" }
func (i intelHost) limits() Limits                { return limits }
func (i intelHost) checkMachineID(b []byte) error { return i.h.checkMachineID(b) }
func (i intelHost) newMachineID() ([]byte, error) { return i.h.newMachineID() }
func (i intelHost) create(p *Plan) (guest, error) { return i.h.create(p) }

type intelGuest struct{ g *fakeGuest }

func (i intelGuest) Start() error                       { return i.g.Start() }
func (i intelGuest) CanStop() bool                      { return true }
func (i intelGuest) Stop() error                        { return i.g.Stop() }
func (i intelGuest) CanRequestStop() bool               { return true }
func (i intelGuest) RequestStop() (bool, error)         { return i.g.RequestStop() }
func (i intelGuest) Pause() error                       { return i.g.Pause() }
func (i intelGuest) Resume() error                      { return i.g.Resume() }
func (i intelGuest) Connect(p uint32) (net.Conn, error) { return i.g.Connect(p) }
func (i intelGuest) States() <-chan vmState             { return i.g.States() }

func logTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
