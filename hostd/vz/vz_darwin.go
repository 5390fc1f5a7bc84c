package vz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// VM is a guest run by Virtualization.framework inside hostd's process.
type VM struct {
	cfg machine.Config
	log *slog.Logger

	vm      *vz.VirtualMachine
	config  *vz.VirtualMachineConfiguration // vm's: whether it can be saved is asked of it
	network *os.File                        // the VM's own copy of its socketpair end: vz holds only the descriptor
	console *consoleFiles                   // the VM's own console descriptors, likewise

	machine.Lifecycle // State, Done, Err
}

var _ machine.Machine = (*VM)(nil)

// New prepares a VM; Start runs it.
func New(cfg machine.Config, log *slog.Logger) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &VM{cfg: cfg, log: log}, nil
}

// Backend reports vz and Apple's hypervisor.
func (v *VM) Backend() (string, string) { return "vz", "hvf" }

// Start checks the config against this Mac, builds the VM and starts it.
func (v *VM) Start(ctx context.Context) error {
	plan, err := v.launch(func(m *vz.VirtualMachine, _ *vz.VirtualMachineConfiguration) error { return start(m) })
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
func (v *VM) launch(begin func(*vz.VirtualMachine, *vz.VirtualMachineConfiguration) error) (*Plan, error) {
	plan, err := v.plan()
	if err != nil {
		v.Fail(err)
		return nil, err
	}
	m, config, err := create(plan)
	if err == nil {
		err = begin(m, config)
	}
	if err != nil {
		plan.Network.Close()
		v.console.Close()
		v.Fail(err)
		return nil, err
	}
	v.vm, v.config, v.network = m, config, plan.Network
	// Watched only now, so that a failed launch leaves no goroutine behind;
	// the state changes vz queued meanwhile (its channel is unbounded) still come.
	go v.watch()
	return plan, nil
}

// plan checks the config against this Mac and gives the VM its own copy
// of the NIC's descriptor (see ownNetwork).
func (v *VM) plan() (*Plan, error) {
	plan, err := newPlan(v.cfg)
	if err != nil {
		return nil, err
	}
	if v.console, err = ownConsole(v.cfg.Console); err != nil {
		return nil, err
	}
	plan.Console, plan.ConsoleIn = v.console.out, v.console.in
	if plan.Network, err = ownNetwork(v.cfg.Network); err != nil {
		v.console.Close()
		return nil, err
	}
	return plan, nil
}

// newPlan lays cfg out for this Mac, touching no descriptor.
func newPlan(cfg machine.Config) (*Plan, error) {
	version, err := macOSVersion()
	if err != nil {
		return nil, err
	}
	limits := Limits{
		MinCPUs: vz.VirtualMachineConfigurationMinimumAllowedCPUCount(), MaxCPUs: vz.VirtualMachineConfigurationMaximumAllowedCPUCount(),
		MinMemory: vz.VirtualMachineConfigurationMinimumAllowedMemorySize(), MaxMemory: vz.VirtualMachineConfigurationMaximumAllowedMemorySize(),
	}
	return NewPlan(cfg, runtime.GOARCH, version, limits)
}

// macOSVersion is kern.osproductversion, e.g. "14.6.1".
func macOSVersion() (string, error) {
	version, err := unix.Sysctl("kern.osproductversion")
	if err != nil {
		return "", fmt.Errorf("read the macOS version: %w", err)
	}
	return version, nil
}

// start runs m, cutting its power when vz fails part way.
func start(m *vz.VirtualMachine) error {
	if err := m.Start(); err != nil {
		if m.CanStop() {
			_ = m.Stop()
		}
		return fmt.Errorf("start the VM: %w", Explain(err))
	}
	return nil
}

// create builds and validates vz's configuration and makes the VM.
func create(plan *Plan) (*vz.VirtualMachine, *vz.VirtualMachineConfiguration, error) {
	config, err := build(plan)
	if err != nil {
		return nil, nil, Explain(err)
	}
	if err := checkValid(config.Validate()); err != nil {
		return nil, nil, err
	}
	m, err := vz.NewVirtualMachine(config)
	if err != nil {
		return nil, nil, fmt.Errorf("create the VM: %w", Explain(err))
	}
	return m, config, nil
}

// watch follows vz's state changes until the VM stops.
func (v *VM) watch() {
	for s := range v.vm.StateChangedNotify() {
		v.log.Debug("vm state", "state", s.String())
		switch s {
		case vz.VirtualMachineStateRunning:
			v.SetState(machine.Running)
		case vz.VirtualMachineStateStopping:
			v.SetState(machine.Stopping)
		case vz.VirtualMachineStateStopped, vz.VirtualMachineStateError:
			v.finish(s)
			return
		}
	}
}

// finish ends the VM once vz reports it stopped (watch calls it once). The
// VM no longer reads or writes its NIC nor its console: its copies of the
// descriptors go first, so the netstack's and the console drain's reads on
// the other ends have ended by the time Done closes.
func (v *VM) finish(s vz.VirtualMachineState) {
	v.network.Close()
	v.console.Close()
	if s == vz.VirtualMachineStateError {
		v.Fail(errors.New("the VM stopped on an internal error of Virtualization.framework; see serial.log"))
		return
	}
	v.Exit(errors.New("the guest powered off"))
}

// Stop asks the guest to power off (Config.PowerOffWithin: the agent, else
// the virtual power button), then cuts the power after timeout.
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	v.MarkStopping()
	if v.vm == nil {
		return nil
	}
	if timeout > 0 {
		err := v.cfg.PowerOffWithin(ctx, timeout, v.powerButton, v.Done())
		if err == nil {
			return nil
		}
		v.log.Warn("cutting the guest's power", "why", err)
	}
	if v.vm.CanStop() {
		if err := v.vm.Stop(); err != nil {
			return fmt.Errorf("stop the VM: %w", err)
		}
	}
	select {
	case <-v.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// powerButton presses the VM's virtual power button.
func (v *VM) powerButton() error {
	if !v.vm.CanRequestStop() {
		return errors.New("the VM cannot be asked to stop now")
	}
	_, err := v.vm.RequestStop()
	return err
}

// DialAgent connects to the agent's vsock port, retrying while the guest
// boots and its agent is not listening yet; each attempt is bounded, and
// ctx and the VM stopping end the wait (dialRetry).
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	if v.vm == nil {
		return nil, errors.New("the VM is not started")
	}
	devices := v.vm.SocketDevices()
	if len(devices) == 0 {
		return nil, errors.New("the VM has no virtio socket device")
	}
	conn, err := dialRetry(ctx, v.Done(), agentRetry, func() (net.Conn, error) {
		c, err := devices[0].Connect(agentwire.VsockPort)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("connect to the agent on vsock port %d: %w", agentwire.VsockPort, err)
	}
	return conn, nil
}
