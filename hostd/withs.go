package hostd

import (
	"context"
	"slices"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
)

// withsWait bounds the wait for what `init --with` installed: Docker
// takes most of a minute to start under emulation, seconds elsewhere.
const withsWait = 3 * time.Minute

// awaitWiths waits, before the instance is called ready, for the services
// `init --with` installed to be up, as Lima's readiness probes do: Docker
// starts with the guest (the agent is up long before it), and a `docker`
// run as soon as start returns must find it. A service that does not come
// up is a note, not a failed boot: the guest is there to look inside.
func (d *Daemon) awaitWiths(ctx context.Context, provisioned bool) {
	if !provisioned || !slices.Contains(d.cfg.With, instance.WithDocker) {
		return // an unprovisioned guest is not called ready at all
	}
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return
	}
	// Said only when it takes a while: a resumed guest's is up already.
	slow := time.AfterFunc(time.Second, func() {
		d.events.emit(controlwire.PhaseNote, "waiting for docker to start", nil)
	})
	defer slow.Stop()
	ctx, cancel := context.WithTimeout(ctx, withsWait)
	defer cancel()
	if err := agent.StartUnits(ctx, "docker.service"); err != nil {
		d.log.Error("docker did not start", "err", err)
		d.events.emit(controlwire.PhaseNote, "docker did not start; look with `cowork exec sudo journalctl -u docker -n 50`", err)
	}
}
