package cowork

import (
	"context"
	"fmt"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
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
	if err := i.LocalOnly(OpPolicy); err != nil {
		return nil, err
	}
	c, err := suggest.FromLog(ctx, i.Paths.NetworkLog(), o)
	if err != nil {
		return nil, fmt.Errorf("read the audit log of %s: %w", i.Name, err)
	}
	return c.Finish(i.Config.Network.Policy)
}

// MaxLearnTTL is the longest learn mode lasts, whatever ttl asks.
const MaxLearnTTL = 8 * time.Hour

// Learning is learn mode on a running instance (Instance.Learn): while
// it lasts, what the policy refuses only for not being listed is let
// through, and its audit lines say "learn": true; the host itself, its
// unexposed ports, private and metadata addresses and the deny list stay
// refused. Since and Until are when it began and its ceiling, on hostd's
// clock; SuggestPolicy with Since then proposes what the task needed.
type Learning struct {
	Since, Until time.Time

	client *Client // Instance.Learn's own, closed with it
	heldCall
}

// Learn puts the guest network in learn mode for at most ttl, rounded up
// to a whole second (0 or more than MaxLearnTTL: MaxLearnTTL; negative:
// an error); ctx bounds the asking only. The mode lasts until Close, until
// the Client is closed, or until this process exits, however it exits
// (hostd sees the socket close), and is never saved in the config.
func (c *Client) Learn(ctx context.Context, ttl time.Duration) (*Learning, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("learn mode for %s: want a duration of 0 (the most, %s) or more", ttl, MaxLearnTTL)
	}
	l := &Learning{}
	r, err := hold(ctx, &l.heldCall, func(life context.Context) (*controlwire.Stream[controlwire.Learning], error) {
		return c.api.Learn(life, controlwire.LearnRequest{TTLSeconds: ttlSeconds(ttl, MaxLearnTTL)})
	})
	if err != nil {
		return nil, err
	}
	l.Since, l.Until = r.Since, r.Until
	return l, nil
}

// Learn is Client.Learn on the instance's daemon; the error of a stopped
// instance says how to start it.
func (i *Instance) Learn(ctx context.Context, ttl time.Duration) (*Learning, error) {
	if err := i.LocalOnly(OpPolicy); err != nil {
		return nil, err
	}
	c, err := i.Client()
	if err != nil {
		return nil, err
	}
	l, err := c.Learn(ctx, ttl)
	if err != nil {
		c.Close()
		return nil, err
	}
	l.client = c
	return l, nil
}

// Close ends learn mode: new flows are judged by the policy alone when
// it returns. Closing it twice does nothing.
func (l *Learning) Close() error {
	l.end(nil, func() {
		if l.client != nil {
			l.client.Close()
		}
	})
	return nil
}
