package cowork

import (
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// UsageReport is what an instance's Claude Code spent on the API through
// the relay, as hostd counted it from the answers: by UTC day and by
// session (each ask or claude; a throwaway run's are its parent's), with
// the daily budget its policy sets. Days and Sessions are oldest first.
type UsageReport struct {
	Instance    string         `json:"instance"`
	Today       string         `json:"today"` // UTC, as Days name days
	DailyBudget *policy.Budget `json:"daily_budget,omitempty"`
	// Largest is the largest answer counted yet, which a request in
	// flight is taken to cost when requests near a budget are admitted.
	Largest  budget.Largest   `json:"largest"`
	Days     []budget.Day     `json:"days"`
	Sessions []budget.Session `json:"sessions"`
}

// Usage reads the instance's usage.json (its parent's for a throwaway
// clone), stopped or running: an empty report when nothing was spent.
func (i *Instance) Usage() (*UsageReport, error) {
	owner, paths := i.Name, i.Paths
	if t := i.Config.Throwaway; t != nil {
		if p, err := instance.PathsFor(t.Parent); err == nil {
			owner, paths = t.Parent, p
		}
	}
	f, err := (&budget.Store{Path: paths.Usage(), Lock: paths.UsageLock()}).Read()
	if err != nil {
		return nil, err
	}
	r := &UsageReport{Instance: owner, Today: budget.DayOf(time.Now()), DailyBudget: i.Config.Network.Policy.Budget,
		Largest: f.Largest, Days: f.Days, Sessions: f.Sessions}
	if r.Days == nil {
		r.Days = []budget.Day{}
	}
	if r.Sessions == nil {
		r.Sessions = []budget.Session{}
	}
	return r, nil
}
