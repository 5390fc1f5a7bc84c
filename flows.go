package cowork

import (
	"context"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// FlowFilter picks records of an instance's network audit log
// (Instance.Flows); the zero filter picks every one.
type FlowFilter struct {
	// Since drops the records that ended before it.
	Since time.Time
	// Exec keeps the records whose owner the guest claims is a process of
	// the exec whose id is, or begins with, Exec (`cowork exec -v` prints
	// it), as `cowork proxy --exec` does.
	Exec string
	// Ask keeps an ask's (or claude run's) records, as `cowork proxy --ask`
	// does: its API calls and tool calls, under its relay session, and the
	// flows whose owner the guest claims is of its exec.
	Ask string
}

func (f FlowFilter) keeps(r *audit.Record) bool {
	return (f.Exec == "" || r.OfExec(f.Exec)) && (f.Ask == "" || r.OfAsk(f.Ask))
}

// Flows calls fn with each record of the instance's network audit log
// that f keeps, oldest first, its rotated files first: every DNS query,
// flow, proxied request, API call and tool call, each with the guest
// process behind it where the guest named one (Record.Owner, its claim).
// An error of fn's stops the reading and is returned. skipped counts the
// damaged lines passed over (`cowork audit verify` says where).
func (i *Instance) Flows(ctx context.Context, f FlowFilter, fn func(*audit.Record) error) (skipped int, err error) {
	return audit.Stream(ctx, i.Paths.NetworkLog(), f.Since, false, func(r *audit.Record) error {
		if !f.keeps(r) {
			return nil
		}
		return fn(r)
	})
}
