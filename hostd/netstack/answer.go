package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// exchange is one HTTP request the relay or the proxy forwards: what sets
// the two apart. The rest is answerHTTP's, the same for both: streaming the
// upstream's answer to the guest as it comes, counting both bodies, and
// the audit line, with why an answer that broke off was cut short.
type exchange struct {
	rec       *audit.Record
	rewrite   func(*httputil.ProxyRequest)
	transport http.RoundTripper
	// modify, when set, changes the answer's headers before the guest
	// gets them.
	modify func(*http.Response)
	// settle, when set, completes the audit record once the exchange is
	// over, however it ended, before the record is written.
	settle func(*audit.Record)
	// denied, when set, says the exchange was refused by the policy on
	// the way (its audit line is a denial).
	denied func() bool
	// unanswered answers the guest when the upstream gave no answer (err
	// is the transport's, redacted), and returns the status it wrote and
	// what the audit line says.
	unanswered func(w http.ResponseWriter, err error) (status int, audited error)
	// endedBy, when set, is a cause of the exchange's own for an answer
	// cut (the relay's session ended); nil while there is none.
	endedBy func() error
	// upstream names the other end in the audit line ("the endpoint").
	upstream string
	// secrets are kept out of every log line and audit error.
	secrets []string
	// log takes the exchange's lines (prefixed, rate-limited by hostd's
	// handler); warnCut adds one on an answer cut short.
	log     *slog.Logger
	prefix  string
	warnCut bool
}

// answerHTTP forwards r as x says and writes its audit line when it ends,
// however it ends. ReverseProxy panics (http.ErrAbortHandler, so that the
// server drops the guest's connection) when the answer breaks off
// mid-copy; the record is written on the way out all the same, saying
// the answer was cut short and by whom: the exchange's own cause, the
// guest (its client gave up, or its connection broke: it will likely ask
// again, and the audit log says why there were two requests), or else the
// upstream.
func (n *Stack) answerHTTP(w http.ResponseWriter, r *http.Request, x exchange) {
	rec := x.rec
	var out, in atomic.Int64
	if r.Body != nil {
		r.Body = &requestBody{ReadCloser: r.Body, n: &out}
	}
	guest := r.Context()
	var failed error
	rp := &httputil.ReverseProxy{
		Rewrite:       x.rewrite,
		Transport:     x.transport,
		FlushInterval: -1, // stream: server-sent events pass as they come
		ModifyResponse: func(resp *http.Response) error {
			n.owners.holdAnswer(rec) // a client that has its answer may leave
			rec.Status = resp.StatusCode
			if x.modify != nil {
				x.modify(resp)
			}
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &in}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			n.owners.holdAnswer(rec)
			// Transport errors may quote the upstream's URL.
			rec.Status, failed = x.unanswered(w, errors.New(redactText(err.Error(), x.secrets...)))
		},
		ErrorLog: log.New(&redactingLog{log: x.log, prefix: x.prefix, secrets: x.secrets}, "", 0),
	}
	cut := true
	defer func() {
		rec.BytesOut, rec.BytesIn = out.Load(), in.Load()
		if cut && failed == nil {
			failed = cutBy(x, guest)
			if x.warnCut {
				x.log.Warn(x.prefix+" answer cut short", "status", rec.Status, "bytes_in", rec.BytesIn,
					"after", time.Since(rec.Start).Round(time.Millisecond), "err", failed)
			}
		}
		if x.settle != nil {
			x.settle(rec)
		}
		verdict := audit.Allow
		if x.denied != nil && x.denied() {
			verdict = audit.Deny
		}
		n.finish(rec, verdict, failed)
	}()
	rp.ServeHTTP(w, r)
	cut = false
}

// cutBy says why an answer broke off.
func cutBy(x exchange, guest context.Context) error {
	if x.endedBy != nil {
		if err := x.endedBy(); err != nil {
			return fmt.Errorf("the answer was cut: %w", err)
		}
	}
	if guest.Err() != nil {
		return fmt.Errorf("the guest's connection ended before the answer did: %w", context.Cause(guest))
	}
	return fmt.Errorf("the answer from %s broke off", x.upstream)
}

// requestBody counts the guest's request body and keeps its end: once it
// has said EOF it says so again without asking the server. The transport
// reads once more past a Content-Length to check that the body ends, and
// the server closes a request body it has read to its end as soon as the
// handler starts its answer (which the endpoint may send before that last
// read); that read then failed, and the transport dropped the endpoint's
// connection, cutting an answer that had just begun.
type requestBody struct {
	io.ReadCloser
	n   *atomic.Int64
	eof bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	b.eof = err == io.EOF
	return k, err
}

// countingBody counts the upstream's answer as the guest is sent it.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}

// redactingLog is ReverseProxy's error log: its lines go to hostd's log
// (whose handler rate-limits them: the guest can make them come in a
// loop), without the secrets or any URL's user information.
type redactingLog struct {
	log     *slog.Logger
	prefix  string
	secrets []string
}

func (l *redactingLog) Write(p []byte) (int, error) {
	l.log.Warn(l.prefix + ": " + strings.TrimSpace(redactText(string(p), l.secrets...)))
	return len(p), nil
}
