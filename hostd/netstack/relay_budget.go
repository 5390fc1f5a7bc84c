package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

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
	ticket  *budget.Ticket
	meter   *usage.Meter
	body    *scannedBody // nil for a request without one
	status  int          // the answer's; 0 until it comes
	n       *Stack
	session string
}

// admitCall judges a Messages API call against its session's budgets and the
// instance's (see package budget): it waits while the requests in flight
// may reach a limit, and answers the guest itself, with an API error
// Claude Code shows at once, when one is reached. ok is false when the
// request was answered here. It reads the first bytes of r's body (see
// scanBody) to know what the call may cost.
func (n *Stack) admitCall(ctx context.Context, w http.ResponseWriter, rec *audit.Record, sess *Session, path string, r *http.Request) (m *metered, ok bool) {
	if path != meteredCall {
		return nil, true
	}
	body, req := scanBody(r)
	t, err := sess.ask.Admit(ctx, req)
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
	return &metered{ticket: t, body: body, n: n, session: sess.ID}, true
}

// scanBody reads what r's body says of the call's cost: at most
// usage.MaxRequestHead bytes of it now, for its model and max_tokens,
// and the rest as it is forwarded (a max_tokens written again further on
// raises the charge of an answer cut short). r's body is replaced by one
// that gives the same bytes.
func scanBody(r *http.Request) (*scannedBody, budget.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, budget.Request{}
	}
	b := &scannedBody{rest: r.Body, scan: usage.NewRequestScan(), size: r.ContentLength}
	head, err := io.ReadAll(io.LimitReader(r.Body, usage.MaxRequestHead))
	switch {
	case err != nil:
		b.err = err
	case len(head) < usage.MaxRequestHead:
		b.err = io.EOF
	}
	b.head = head
	b.scan.Write(head)
	r.Body = b
	return b, b.request()
}

// scannedBody is a request's body on its way upstream: its head, read
// before the call was admitted, then the rest, read by the scan as it
// passes. It says whether the body went whole.
type scannedBody struct {
	head []byte
	err  error // after the head: its reading's (io.EOF when it was all)
	rest io.ReadCloser
	size int64 // the Content-Length; -1 when unknown

	mu   sync.Mutex // the transport reads while the relay settles
	scan *usage.RequestScan
	read int64
	sent bool // read to its end
}

func (b *scannedBody) Read(p []byte) (int, error) {
	var k int
	var err error
	rest := false // the head was scanned when it was read
	switch {
	case len(b.head) > 0:
		k = copy(p, b.head)
		b.head = b.head[k:]
	case b.err != nil:
		err = b.err
	default:
		k, err = b.rest.Read(p)
		rest = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if rest {
		b.scan.Write(p[:k])
	}
	b.read += int64(k)
	b.sent = b.sent || err == io.EOF || b.size > 0 && b.read >= b.size
	return k, err
}

func (b *scannedBody) Close() error { return b.rest.Close() }

// request is what the body says so far of the call's cost.
func (b *scannedBody) request() budget.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return budget.Request{Model: b.scan.Model(), InputTokens: b.scan.InputTokens(b.size), MaxTokens: b.scan.MaxTokens()}
}

// wentWhole says the body was read to its end by the transport.
func (b *scannedBody) wentWhole() bool {
	if b == nil {
		return false // a call without a body is no call the endpoint runs
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent
}

// watch is the exchange's modify: it has the answer's body read by a
// meter on its way to the guest.
func (m *metered) watch(resp *http.Response) {
	if m == nil {
		return
	}
	m.status = resp.StatusCode
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
	o := budget.Outcome{Status: m.status, Sent: m.body.wentWhole()}
	if m.body != nil {
		o.Request = m.body.request()
	}
	c, err := m.ticket.Settle(r, o)
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
