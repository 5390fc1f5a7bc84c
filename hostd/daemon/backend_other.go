//go:build !darwin

package daemon

import (
	"log/slog"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/qemu"
)

// newMachine picks the backend for this host: QEMU.
func newMachine(c machine.Config, log *slog.Logger) (machine.Machine, error) {
	return qemu.New(c, log)
}
