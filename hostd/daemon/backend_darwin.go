package daemon

import (
	"log/slog"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/vz"
)

// newMachine picks the backend for this host: Virtualization.framework.
func newMachine(c machine.Config, log *slog.Logger) (machine.Machine, error) {
	return vz.New(c, log)
}
