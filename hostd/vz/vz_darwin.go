package vz

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/hostd/machine"
)

// New prepares a VM on this Mac; Start runs it.
func New(cfg machine.Config, log *slog.Logger) (*VM, error) { return newVM(cfg, log, mac{}) }

// mac is this Mac (vm.go's host).
type mac struct{}

func (mac) version() (string, error) { return unix.Sysctl("kern.osproductversion") }
func (mac) build() (string, error)   { return unix.Sysctl("kern.osversion") }
func (mac) arch() string             { return runtime.GOARCH }

func (mac) limits() Limits {
	return Limits{
		MinCPUs: vz.VirtualMachineConfigurationMinimumAllowedCPUCount(), MaxCPUs: vz.VirtualMachineConfigurationMaximumAllowedCPUCount(),
		MinMemory: vz.VirtualMachineConfigurationMinimumAllowedMemorySize(), MaxMemory: vz.VirtualMachineConfigurationMaximumAllowedMemorySize(),
	}
}

// checkMachineID: vz wraps what initWithDataRepresentation returns, nil
// for data it cannot read, whose representation is then empty.
func (mac) checkMachineID(data []byte) error {
	id, err := vz.NewGenericMachineIdentifierWithData(data)
	if err == nil && len(id.DataRepresentation()) == 0 {
		err = errors.New("the framework does not read it as a machine identifier")
	}
	return err
}

func (mac) newMachineID() ([]byte, error) {
	id, err := vz.NewGenericMachineIdentifier()
	if err != nil {
		return nil, err
	}
	return id.DataRepresentation(), nil
}

func (mac) create(p *Plan) (guest, error) {
	config, err := build(p)
	if err != nil {
		return nil, Explain(err)
	}
	if err := checkValid(config.Validate()); err != nil {
		return nil, err
	}
	m, err := vz.NewVirtualMachine(config)
	if err != nil {
		return nil, fmt.Errorf("create the VM: %w", Explain(err))
	}
	return &vzGuest{VirtualMachine: m, config: config}, nil
}

// vzGuest is a vz.VirtualMachine as vm.go's guest; its configuration is
// kept, for whether it can be saved is asked of it.
type vzGuest struct {
	*vz.VirtualMachine
	config *vz.VirtualMachineConfiguration
}

func (g *vzGuest) Start() error { return g.VirtualMachine.Start() }

func (g *vzGuest) Connect(port uint32) (net.Conn, error) {
	devices := g.SocketDevices()
	if len(devices) == 0 {
		return nil, errors.New("the VM has no virtio socket device")
	}
	c, err := devices[0].Connect(port)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return c, nil
}

var vmEvents = map[vz.VirtualMachineState]vmEvent{
	vz.VirtualMachineStateRunning: vmRunning, vz.VirtualMachineStateStopping: vmStopping,
	vz.VirtualMachineStateStopped: vmStopped, vz.VirtualMachineStateError: vmError,
}

func (g *vzGuest) States() <-chan vmState {
	out := make(chan vmState)
	go func() {
		defer close(out)
		for s := range g.StateChangedNotify() {
			e := vmEvents[s]
			out <- vmState{is: e, name: s.String()}
			if e == vmStopped || e == vmError {
				return
			}
		}
	}()
	return out
}
