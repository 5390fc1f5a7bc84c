package hostd

import (
	"context"
	"slices"
	"sync"
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
	// Said only when it takes a while (a resumed guest's is up already),
	// and never after the wait ended: ready may follow at once.
	var mu sync.Mutex
	waiting := true
	slow := time.AfterFunc(time.Second, func() {
		mu.Lock()
		defer mu.Unlock()
		if waiting {
			d.events.emit(controlwire.PhaseNote, "waiting for docker to start", nil)
		}
	})
	wctx, cancel := context.WithTimeout(ctx, withsWait)
	err := agent.StartUnits(wctx, "docker.service")
	cancel()
	mu.Lock()
	waiting = false
	mu.Unlock()
	slow.Stop()
	if err != nil && ctx.Err() == nil { // a stop during the wait is no failure of docker's
		d.log.Error("docker did not start", "err", err)
		d.events.emit(controlwire.PhaseNote, "docker did not start; look with `cowork exec sudo journalctl -u docker -n 50`", err)
	}
}
