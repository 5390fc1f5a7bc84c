package vz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// The VM around the framework's calls. vz_darwin.go gives the real host
// (this Mac) and guest (a vz.VirtualMachine); everything else a VM does
// (the order of the calls, the state it keeps, its locking, what an
// error tells the user) is here, and tested on Linux with fakes.

// host is this Mac as a VM needs it.
type host interface {
	version() (string, error) // kern.osproductversion, e.g. "14.6.1"
	build() (string, error)   // kern.osversion, e.g. "23G93"
	arch() string             // the Mac's, as GOARCH
	limits() Limits
	// checkMachineID says whether the framework reads data as a generic
	// machine identifier; newMachineID makes one and returns its data.
	checkMachineID(data []byte) error
	newMachineID() ([]byte, error)
	// create builds the framework's configuration of the plan, validates
	// it and makes the VM, not started.
	create(*Plan) (guest, error)
}

// guest is one VM the framework made (VZVirtualMachine).
type guest interface {
	Start() error
	CanStop() bool
	Stop() error
	CanRequestStop() bool
	RequestStop() (bool, error)
	Pause() error
	Resume() error
	// Connect opens a channel to the guest's vsock port.
	Connect(port uint32) (net.Conn, error)
	// States are the VM's state changes, from the one after its creation;
	// the channel closes after vmStopped or vmError.
	States() <-chan vmState
}

// vmState is a state the framework reports, as far as the VM follows it.
type vmState struct {
	is   vmEvent
	name string // the framework's, for the log
}

type vmEvent int

const (
	vmOther    vmEvent = iota // starting, pausing, saving and the rest
	vmRunning                 // running, and resumed after a pause
	vmStopping                // the guest is powering off
	vmStopped                 // powered off
	vmError                   // stopped on an internal error of the framework
)

// VM is a guest run by Virtualization.framework inside hostd's process.
type VM struct {
	cfg  machine.Config
	log  *slog.Logger
	host host

	// mu guards the VM once launched: Start and Restore set it while the
	// control server's calls (Stop, DialAgent, the save calls) read it.
	mu      sync.Mutex
	g       guest         // nil until launched
	network *os.File      // the VM's own copy of its socketpair end: vz holds only the descriptor
	console *consoleFiles // the VM's own console descriptors, likewise

	machine.Lifecycle // State, Done, Err
}

var _ machine.Machine = (*VM)(nil)

func newVM(cfg machine.Config, log *slog.Logger, h host) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &VM{cfg: cfg, log: log, host: h}, nil
}

// Backend reports vz and Apple's hypervisor.
func (v *VM) Backend() (string, string) { return "vz", "hvf" }

// guest is the launched VM, nil before.
func (v *VM) guest() guest {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.g
}

// Start checks the config against this Mac, builds the VM and starts it.
func (v *VM) Start(ctx context.Context) error {
	plan, err := v.launch(start)
	if err != nil {
		return err
	}
	v.log.Info("vm started", "backend", "vz", "cpus", plan.CPUs, "memory", plan.Memory)
	return nil
}

// launch checks the config against this Mac, builds the VM and hands it
// to begin, which boots it (Start) or loads a saved guest into it
// (Restore). A failed launch leaves nothing behind (hostd never records
// the VM): the NIC and console copies are closed, and Done closed with
// the error; begin stops what it started.
func (v *VM) launch(begin func(guest) error) (*Plan, error) {
	plan, console, err := v.plan()
	if err != nil {
		v.Fail(err)
		return nil, err
	}
	g, err := v.host.create(plan)
	if err == nil {
		err = begin(g)
	}
	if err != nil {
		plan.Network.Close()
		console.Close()
		v.Fail(err)
		return nil, err
	}
	v.mu.Lock()
	v.g, v.network, v.console = g, plan.Network, console
	v.mu.Unlock()
	// Watched only now, so that a failed launch leaves no goroutine behind;
	// the state changes vz queued meanwhile (its channel is unbounded) still come.
	go v.watch(g)
	return plan, nil
}

// plan checks the config against this Mac, loads (or makes) the machine
// identifier, and gives the VM its own copies of the console's and the
// NIC's descriptors (see ownConsole, ownNetwork).
func (v *VM) plan() (*Plan, *consoleFiles, error) {
	plan, err := v.newPlan()
	if err != nil {
		return nil, nil, err
	}
	if plan.MachineIDData, err = machineID(plan.MachineID, v.host.checkMachineID, v.host.newMachineID, v.log); err != nil {
		return nil, nil, err
	}
	console, err := ownConsole(v.cfg.Console)
	if err != nil {
		return nil, nil, err
	}
	plan.Console, plan.ConsoleIn = console.out, console.in
	if plan.Network, err = ownNetwork(v.cfg.Network); err != nil {
		console.Close()
		return nil, nil, err
	}
	return plan, console, nil
}

// newPlan lays the config out for this Mac, touching no descriptor.
func (v *VM) newPlan() (*Plan, error) {
	version, err := v.macOS()
	if err != nil {
		return nil, err
	}
	return NewPlan(v.cfg, v.host.arch(), version, v.host.limits())
}

// macOS is this Mac's product version.
func (v *VM) macOS() (string, error) {
	version, err := v.host.version()
	if err != nil {
		return "", fmt.Errorf("read the macOS version (sysctl kern.osproductversion): %w", err)
	}
	return version, nil
}

// start runs g, cutting its power when vz fails part way.
func start(g guest) error {
	if err := g.Start(); err != nil {
		if g.CanStop() {
			_ = g.Stop()
		}
		return fmt.Errorf("start the VM: %w", Explain(err))
	}
	return nil
}

// watch follows the framework's state changes until the VM stops.
func (v *VM) watch(g guest) {
	for s := range g.States() {
		v.log.Debug("vm state", "state", s.name)
		switch s.is {
		case vmRunning:
			v.SetState(machine.Running)
		case vmStopping:
			v.SetState(machine.Stopping)
		case vmStopped, vmError:
			v.finish(s.is)
			return
		}
	}
	v.finish(vmError) // the framework stopped reporting without a last state
}

// finish ends the VM once vz reports it stopped (watch calls it once). The
// VM no longer reads or writes its NIC nor its console: its copies of the
// descriptors go first, so the netstack's and the console drain's reads on
// the other ends have ended by the time Done closes.
func (v *VM) finish(e vmEvent) {
	v.mu.Lock()
	network, console := v.network, v.console
	v.mu.Unlock()
	network.Close()
	console.Close()
	if e == vmError {
		v.Fail(errors.New("the VM stopped on an internal error of Virtualization.framework; see serial.log and hostd.log, then `cowork start` it again"))
		return
	}
	v.Exit(errors.New("the guest powered off"))
}

// Stop asks the guest to power off (Config.PowerOffWithin: the agent, else
// the virtual power button), then cuts the power after timeout, or at
// once when the guest could not be asked.
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	v.MarkStopping()
	g := v.guest()
	if g == nil {
		return nil
	}
	if timeout > 0 {
		err := v.cfg.PowerOffWithin(ctx, timeout, func() error { return powerButton(g) }, v.Done())
		if err == nil {
			return nil
		}
		v.log.Warn("cutting the guest's power", "why", err)
	}
	if g.CanStop() {
		if err := g.Stop(); err != nil {
			return fmt.Errorf("stop the VM: %w; if it still runs, end hostd (see `cowork status` for its pid)", Explain(err))
		}
	}
	select {
	case <-v.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// powerButton presses the VM's virtual power button. The framework can
// decline without an error (RequestStop's false): the guest was not
// asked, and waiting for it to power off would only wait out the timeout.
func powerButton(g guest) error {
	if !g.CanRequestStop() {
		return errors.New("the VM cannot be asked to stop now")
	}
	ok, err := g.RequestStop()
	switch {
	case err != nil:
		return fmt.Errorf("press the power button: %w", Explain(err))
	case !ok:
		return errors.New("the framework did not pass the power button's press on to the guest")
	}
	return nil
}

// DialAgent connects to the agent's vsock port, retrying while the guest
// boots and its agent is not listening yet; each attempt is bounded, and
// ctx and the VM stopping end the wait (dialRetry).
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	g := v.guest()
	if g == nil {
		return nil, errors.New("the VM is not started; start it with `cowork start`")
	}
	conn, err := dialRetry(ctx, v.Done(), agentRetry, func() (net.Conn, error) {
		return g.Connect(agentwire.VsockPort)
	})
	if err != nil {
		return nil, fmt.Errorf("connect to the agent on vsock port %d: %w", agentwire.VsockPort, err)
	}
	return conn, nil
}
