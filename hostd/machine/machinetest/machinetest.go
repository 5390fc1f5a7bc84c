// Package machinetest is a machine.Machine for tests of hostd: no
// hypervisor, and a guest the test drives. Its agent is the real one
// (guestagent), served in the test's process over a yamux session on a
// pipe, the transport QEMU's serial channel uses, with the guest's clock
// and power switch replaced by the fake's. A test tells the guest how to
// behave (Guest), then crashes it, prints on its console, or watches how
// hostd stopped it; every Machine keeps the contract of the real backends
// (machine.Machine), so that hostd cannot pass here and fail on a VM.
package machinetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/coworkhq/cowork/guestagent"
	"github.com/coworkhq/cowork/guestagent/listener"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// Guest is how the machines a Host makes behave.
type Guest struct {
	// StartErr fails Start.
	StartErr error
	// StartGate, when set, holds Start until it is closed (or Start's ctx
	// ends): a boot caught between its steps.
	StartGate <-chan struct{}
	// NoAgent is a guest whose agent never comes up: DialAgent fails.
	NoAgent bool
	// DeafToPowerOff is a guest that ignores being asked to power off,
	// by its agent or by the power button: only cutting its power stops it.
	DeafToPowerOff bool
	// StateFile, when set, is a backend that saves its guest into this
	// one file, as vz does, rather than QEMU's device.state and ram.
	StateFile string
	// Systemctl is the program the agent's start_units call runs; empty
	// runs true (every unit starts at once), never the host's systemctl.
	Systemctl string
	// ClockDelay is how long the agent takes to set the clock; the set is
	// counted (Stats.ClockSets) when it is done.
	ClockDelay time.Duration
	// PersonalizeDelay is how long the agent takes to set the hostname,
	// the last step of personalizing a fork, before it records it.
	PersonalizeDelay time.Duration
}

// Host makes the machines of a hostd under test (its NewMachine), and
// hands each to the test as it is made.
type Host struct {
	t    testing.TB
	made chan *Machine

	mu          sync.Mutex
	guest       Guest
	fault       SaveFault
	identity    machine.Identity
	generations int // guests booted so far
}

// NewHost is a Host whose machines behave as guest says.
func NewHost(t testing.TB, guest Guest) *Host {
	bin := filepath.Join(t.TempDir(), "fake-hypervisor")
	if err := os.WriteFile(bin, []byte("a fake hypervisor\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &Host{t: t, made: make(chan *Machine, 16), guest: guest,
		identity: machine.Identity{Binary: bin, Version: "1.0", Devices: "fake devices"}}
}

// SetGuest changes how the machines made from now on behave.
func (h *Host) SetGuest(g Guest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.guest = g
}

// NewMachine is Options.NewMachine: a Machine for c, which it checks as a
// backend does.
func (h *Host) NewMachine(c machine.Config, log *slog.Logger) (machine.Machine, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	g, fault, id := h.guest, h.fault, h.identity
	h.mu.Unlock()
	m := &Machine{Config: c, guest: g, fault: fault, identity: id, host: h, log: log.With("guest", "machinetest"), t: h.t}
	h.t.Cleanup(func() { m.halt(PowerCut, nil) }) // no guest outlives its test
	select {
	case h.made <- m:
	default:
		h.t.Errorf("machinetest: more than %d machines made, none taken by the test", cap(h.made))
	}
	return m, nil
}

// Made is how many machines were made and not yet taken with Next.
func (h *Host) Made() int { return len(h.made) }

// Next waits for the next machine hostd makes.
func (h *Host) Next(t testing.TB) *Machine {
	t.Helper()
	select {
	case m := <-h.made:
		return m
	case <-time.After(time.Minute):
		t.Fatal("machinetest: hostd made no machine in a minute")
		return nil
	}
}

// End is how a machine stopped.
type End string

const (
	Running    End = ""            // it has not
	PoweredOff End = "powered off" // the guest powered off, asked or not
	PowerCut   End = "power cut"   // Stop cut the power
	Crashed    End = "crashed"     // Crash: the hypervisor went
)

// Machine is a fake VM.
type Machine struct {
	// Config is the VM hostd asked for.
	Config machine.Config

	guest    Guest
	fault    SaveFault
	identity machine.Identity
	host     *Host
	log      *slog.Logger
	t        testing.TB

	machine.Lifecycle // State, Done, Err: as the real backends keep them

	mu        sync.Mutex
	started   bool
	end       End
	stops     []time.Duration
	powerOffs int
	clockSets int
	// personalized records personalize calls (Personalized).
	personalized []string
	console      *os.File       // the VM's copy of the console's write end
	agent        *yamux.Session // hostd's end of the agent's channel
	// generation tells booted guests apart (Generation); resumed, a
	// restored one; detaches and attaches count the share's unplugs, ejects
	// the guest's own hand-backs among them.
	generation                 int
	resumed                    bool
	detaches, attaches, ejects int
	share                      *guestShare // the guest's /workspace, as its agent sees it
	closers                    []io.Closer // the guest's side, closed when it stops
}

// Start boots the fake: it keeps a copy of the console (as vz does) and
// brings up its agent, unless the guest says otherwise.
func (m *Machine) Start(ctx context.Context) error {
	if m.guest.StartGate != nil {
		select {
		case <-m.guest.StartGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m.guest.StartErr != nil {
		return m.guest.StartErr
	}
	if err := m.boot(ctx); err != nil {
		return err
	}
	m.host.mu.Lock()
	m.host.generations++
	gen := m.host.generations
	m.host.mu.Unlock()
	m.mu.Lock()
	m.generation = gen
	m.mu.Unlock()
	m.SetState(machine.Running)
	return nil
}

// boot brings the fake up: a copy of the console and the agent.
func (m *Machine) boot(context.Context) error {
	fd, err := syscall.Dup(int(m.Config.Console.Fd()))
	if err != nil {
		return fmt.Errorf("machinetest: console: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.console = os.NewFile(uintptr(fd), "console")
	m.closers = append(m.closers, m.console)
	if !m.guest.NoAgent {
		if err := m.startAgentLocked(); err != nil {
			return err
		}
	}
	m.started = true
	return nil
}

// startAgentLocked serves the real agent on the guest's end of a pipe,
// as the agent does on QEMU's serial port.
func (m *Machine) startAgentLocked() error {
	marker := filepath.Join(m.t.TempDir(), "provisioned") // a provisioned guest
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		return err
	}
	hostEnd, guestEnd := net.Pipe()
	guestSess, err := agentwire.GuestSession(guestEnd, m.log)
	if err != nil {
		return err
	}
	hostSess, err := agentwire.HostSession(hostEnd, m.log)
	if err != nil {
		guestSess.Close()
		return err
	}
	// A booted guest mounts its share; a resumed one was saved without.
	share, err := newGuestShare(m.t, !m.resumed)
	if err != nil {
		return err
	}
	m.share = share
	srv := guestagent.New(guestagent.Options{
		Share:             share.system(),
		ProvisionedMarker: marker,
		SetClock:          m.setClock,
		PowerOff:          m.agentPowerOff,
		Logger:            m.log,
		Personalize:       m.personalizeSystem(),
		Systemctl:         cmp.Or(m.guest.Systemctl, "true"),
	})
	// Execs and calls come on channels of their own, told apart as the
	// real agent does; the channels of no kind it serves are closed.
	l := listener.Sniff(guestSess, m.log, listener.Handlers{Exec: srv.ServeExec, Call: srv.ServeCall})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // the guest stopped
			}
			c.Close()
		}
	}()
	m.agent = hostSess
	m.closers = append(m.closers, hostSess, guestSess, l, closerFunc(srv.Stop))
	return nil
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

// personalizeSystem records what a personalize call changes, in place of
// the guest's system.
func (m *Machine) personalizeSystem() *guestagent.PersonalizeSystem {
	note := func(what string) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.personalized = append(m.personalized, what)
		return nil
	}
	return &guestagent.PersonalizeSystem{
		Reseed:       func(seed []byte) error { return note(fmt.Sprintf("seed %x", seed)) },
		SetMachineID: func(id string) error { return note("machine-id " + id) },
		SetHostname: func(name string) error {
			time.Sleep(m.guest.PersonalizeDelay)
			return note("hostname " + name)
		},
	}
}

// Personalized is what personalize calls changed, in order: "seed HEX",
// "machine-id ID", "hostname NAME".
func (m *Machine) Personalized() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.personalized...)
}

func (m *Machine) setClock(time.Time) error {
	time.Sleep(m.guest.ClockDelay)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clockSets++
	return nil
}

// agentPowerOff is the guest's power switch, as its agent flips it.
func (m *Machine) agentPowerOff() error {
	m.mu.Lock()
	m.powerOffs++
	m.mu.Unlock()
	if !m.guest.DeafToPowerOff {
		m.halt(PoweredOff, errors.New("the guest powered itself off"))
	}
	return nil
}

// pressButton is the hypervisor's power button.
func (m *Machine) pressButton() error {
	if !m.guest.DeafToPowerOff {
		m.halt(PoweredOff, errors.New("the guest powered itself off"))
	}
	return nil
}

// halt stops the machine, how; err is why when no Stop asked for it.
func (m *Machine) halt(how End, err error) {
	m.mu.Lock()
	if m.end != Running {
		m.mu.Unlock()
		return
	}
	m.end = how
	closers := m.closers
	m.closers = nil
	m.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	m.Exit(err)
}

// Stop is a backend's Stop: the machine knows at once that its end was
// asked for; the guest is asked to power off, and its power is cut when
// it has not within timeout (at once when timeout is 0).
func (m *Machine) Stop(ctx context.Context, timeout time.Duration) error {
	m.MarkStopping()
	m.mu.Lock()
	m.stops = append(m.stops, timeout)
	m.mu.Unlock()
	if timeout > 0 && m.Config.PowerOffWithin(ctx, timeout, m.pressButton, m.Done()) == nil {
		return nil
	}
	m.halt(PowerCut, nil)
	return nil
}

// DialAgent opens a channel to the guest's agent.
func (m *Machine) DialAgent(ctx context.Context) (net.Conn, error) {
	m.mu.Lock()
	host, end := m.agent, m.end
	m.mu.Unlock()
	switch {
	case end != Running:
		return nil, errors.New("machinetest: the VM has stopped")
	case host == nil:
		return nil, errors.New("machinetest: the guest agent is not listening")
	}
	return host.Open()
}

// Backend names the fake, for status.
func (m *Machine) Backend() (string, string) { return "machinetest", "none" }

// Crash is the VM going away by itself (the hypervisor died, or the guest
// powered off unasked), with err as its reason.
func (m *Machine) Crash(err error) { m.halt(Crashed, err) }

// Print writes s on the guest's console, as its kernel would.
func (m *Machine) Print(t testing.TB, s string) {
	t.Helper()
	m.mu.Lock()
	c := m.console
	m.mu.Unlock()
	if c == nil {
		t.Fatal("machinetest: Print on a machine that has not started")
	}
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("machinetest: console: %v", err)
	}
}

// Stats is what happened to a machine, for a test to check.
type Stats struct {
	Started   bool
	End       End
	Stops     []time.Duration // each Stop's timeout, in order
	PowerOffs int             // the agent asked to power off
	ClockSets int             // the agent asked to set the clock
}

// Stats is what happened to the machine so far.
func (m *Machine) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Started: m.started, End: m.end, Stops: append([]time.Duration(nil), m.stops...), PowerOffs: m.powerOffs, ClockSets: m.clockSets}
}

var (
	_ machine.Machine   = (*Machine)(nil)
	_ machine.Describer = (*Machine)(nil)
)
