package daemon

import (
	"log/slog"
	"os"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/qemu"
	"github.com/coworkhq/cowork/hostd/vz"
)

// newMachine picks the backend for this host: Virtualization.framework,
// or QEMU when COWORK_BACKEND=qemu (to reproduce a Linux problem on a Mac).
func newMachine(c machine.Config, log *slog.Logger) (machine.Machine, error) {
	if os.Getenv("COWORK_BACKEND") == "qemu" {
		return qemu.New(c, log)
	}
	return vz.New(c, log)
}
