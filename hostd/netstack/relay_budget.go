package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/usage"
)

// The audit rules of a request the budget refused, and of one whose wait
// for admission was cut (its session ended, or its client went away).
const (
	BudgetRefused = "relay: budget reached"
	BudgetWaitCut = "relay: budget: cut while waiting for the requests in flight"
)

// meteredCall is the call whose answers cost tokens: every other call
// the relay forwards is free (count_tokens, models).
const meteredCall = "/v1/messages"

// metered is one Messages API call on its way through the relay: its
// admission ticket and the meter that reads its answer's usage. A nil
// *metered is a call that is not metered; its methods do nothing.
type metered struct {
	ticket   *budget.Ticket
	meter    *usage.Meter
	answered bool
	n        *Stack
	session  string
}

// admitCall judges a Messages API call against its session's budgets and the
// instance's (see package budget): it waits while the requests in flight
// may reach a limit, and answers the guest itself, with an API error
// Claude Code shows at once, when one is reached. ok is false when the
// request was answered here.
func (n *Stack) admitCall(ctx context.Context, w http.ResponseWriter, rec *audit.Record, sess *Session, path string) (m *metered, ok bool) {
	if path != meteredCall {
		return nil, true
	}
	t, err := sess.ask.Admit(ctx)
	var refusal *budget.Refusal
	switch {
	case errors.As(err, &refusal):
		n.refuseFor(rec, http.StatusPaymentRequired, BudgetRefused, refusal)
		// 402 is an error Claude Code does not retry (it retries 429 and
		// 5xx); x-should-retry says so to any client of Anthropic's SDKs.
		w.Header().Set("X-Should-Retry", "false")
		writeAPIError(w, http.StatusPaymentRequired, "billing_error", refusal.Error())
		return nil, false
	case err != nil:
		if sess.Err() != nil {
			writeAPIError(w, http.StatusUnauthorized, "authentication_error", refusalMessage(endedBy(sess.Err())))
			n.refuseFor(rec, http.StatusUnauthorized, BudgetWaitCut, sess.Err())
		} else {
			n.refuseFor(rec, 0, BudgetWaitCut, fmt.Errorf("the guest's connection ended: %w", err))
		}
		return nil, false
	}
	return &metered{ticket: t, n: n, session: sess.ID}, true
}

// watch is the exchange's modify: it has the answer's body read by a
// meter on its way to the guest.
func (m *metered) watch(resp *http.Response) {
	if m == nil {
		return
	}
	m.answered = resp.StatusCode/100 == 2
	m.meter = usage.NewMeter(resp.Header.Get("Content-Type"))
	resp.Body = &meteredBody{ReadCloser: resp.Body, m: m.meter}
}

// settle counts the call's answer once the exchange is over, and writes
// what it cost into its audit record.
func (m *metered) settle(rec *audit.Record) {
	if m == nil || m.ticket == nil {
		return
	}
	var r usage.Result
	if m.meter != nil {
		r = m.meter.Result()
	}
	c, err := m.ticket.Settle(r, m.answered)
	m.ticket = nil
	if err != nil {
		m.n.log.Warn("relay: the usage file was not written; the count goes on in memory", "session", m.session, "err", err)
	}
	rec.Usage = &audit.Usage{Model: clip(c.Model), InputTokens: c.Tokens.Input, OutputTokens: c.Tokens.Output,
		CacheCreationInputTokens: c.Tokens.CacheWrite, CacheReadInputTokens: c.Tokens.CacheRead,
		EstimatedTokens: c.Estimated, CostUSD: c.CostUSD, Note: clip(c.Note)}
}

// meteredBody hands the meter each piece of the answer as the guest is
// sent it.
type meteredBody struct {
	io.ReadCloser
	m *usage.Meter
}

func (b *meteredBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.m.Write(p[:k])
	return k, err
}
