package main

import (
	"log/slog"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/vz"
)

// platformMachine makes a VM with this host's hypervisor,
// Virtualization.framework: `cowork-hostd run` passes it as
// Options.NewMachine.
func platformMachine(c machine.Config, log *slog.Logger) (machine.Machine, error) {
	return vz.New(c, log)
}
