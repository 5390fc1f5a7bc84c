package cowork

import (
	"context"
	"fmt"

	"github.com/coworkhq/cowork/hostd/netstack/policy/suggest"
)

// PolicySuggestion is what SuggestPolicy read from the audit log and the
// policy it proposes (Policy), with each destination marked as listed,
// new, denied or private, and what was left out, rejected or skipped.
type PolicySuggestion = suggest.Suggestion

// SuggestOptions choose the period (Since, Until) and the proposal's
// shape (Top, Group, Prune); the zero value reads all of the log kept.
type SuggestOptions = suggest.Options

// SuggestPolicy proposes an allowlist from the instance's audit log
// (network.jsonl and its rotated files): the names and addresses its
// guest used in the period, allowed or denied, each exactly as seen.
// Nothing is applied: give the result's Policy to SetPolicy once a person
// has looked at it. It reads files only, so the instance may be stopped
// or running. Names in the log come from the guest: one that is not a
// plain DNS name is never proposed (Rejected lists it, unescaped: escape
// it to show it), nor is a private address. Damaged lines are skipped and
// counted (Skipped); `cowork audit verify` says whether the log was
// tampered with. An error means the log could not be read, or the
// current policy does not compile.
func (i *Instance) SuggestPolicy(ctx context.Context, o SuggestOptions) (*PolicySuggestion, error) {
	c, err := suggest.FromLog(ctx, i.Paths.NetworkLog(), o)
	if err != nil {
		return nil, fmt.Errorf("read the audit log of %s: %w", i.Name, err)
	}
	return c.Finish(i.Config.Network.Policy)
}
