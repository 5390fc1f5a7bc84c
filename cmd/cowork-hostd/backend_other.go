//go:build !darwin

package main

import (
	"log/slog"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/qemu"
)

// platformMachine makes a VM with this host's hypervisor, QEMU:
// `cowork-hostd run` passes it as Options.NewMachine.
func platformMachine(c machine.Config, log *slog.Logger) (machine.Machine, error) {
	return qemu.New(c, log)
}
