package ask

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/units"
)

// netSummary is one line on what the ask of id did on the network since
// start, from the audit log at logPath: its API calls and the flows of
// the processes under its claude (audit.Record.OfAsk), how many were denied,
// DNS queries, bytes each way and the hosts most used. The owners are
// the guest's claims (the line says so: a guest can put its flows on
// another ask, or on none), and a record may still be on its way when
// the task ends (hostd writes a flow once its owner is known, within a
// fraction of a second): it is a summary, `cowork proxy --ask` the
// account.
// Each of those records also goes to also, when set.
func netSummary(ctx context.Context, logPath, id string, since time.Time, also func(*audit.Record)) string {
	var s audit.Stats
	hosts := map[string]int{}
	_, err := audit.Stream(ctx, logPath, since, false, func(r *audit.Record) error {
		if !r.OfAsk(id) {
			return nil
		}
		if also != nil {
			also(r)
		}
		s.Add(r)
		// A tool call (the ask's own, written at its end) is no host.
		if r.Kind != audit.KindDNS && r.Kind != audit.KindTool {
			if h := cmp.Or(r.Name, r.Dst); h != "" {
				hosts[h]++
			}
		}
		return nil
	})
	if err != nil {
		return ""
	}
	top := slices.SortedFunc(maps.Keys(hosts), func(a, b string) int {
		return cmp.Or(hosts[b]-hosts[a], strings.Compare(a, b))
	})
	if len(top) > 3 {
		top = top[:3]
	}
	line := fmt.Sprintf("network (as the guest reports): %d flows, %d denied, %d DNS queries, ↑%s ↓%s", s.Flows, s.Blocked, s.Queries, units.Size(s.BytesOut), units.Size(s.BytesIn))
	if len(top) > 0 {
		line += "; mostly " + strings.Join(top, ", ")
	}
	return termsafe.Line(line + " (cowork proxy --ask " + id + ")")
}
