package audit

import (
	"net"
	"sync"
	"time"
)

// Throttle keeps denials from flooding the log. A guest that retries a
// denied destination, sweeps the private ranges or storms past the flow
// limit would otherwise write a line per attempt.
//
// The first denial of a key (a kind of flow to one destination, for one
// reason) is written as it comes, and opens a window for that key; more
// denials of it within the window are counted, and written as one
// summary line when the window ends ("N more like it"). The table holds
// at most Burst keys; a denial of a new key while it is full is counted
// by kind (and client: see othersKey) and summed up the same way. So any
// span of a window costs at most 2×Burst lines of their own, as many
// summaries, and one summary per kind and per client (2×Burst clients at
// most), however hard the guest tries.
type Throttle struct {
	write  func(*Record)
	window time.Duration
	burst  int

	mu     sync.Mutex
	keys   map[string]*quiet
	others map[string]*quiet // by kind (and client): denials that got no line of their own
	due    time.Time         // when the first window in the tables ends
}

// quiet is a window of a key: the record it began with and what it
// kept quiet since.
type quiet struct {
	rec        Record
	start      time.Time
	suppressed int64
}

// Defaults for NewThrottle.
const (
	DefaultThrottleWindow = 10 * time.Second
	DefaultThrottleBurst  = 32
)

// RuleThrottled is the rule of a summary of denials that had no line of
// their own.
const RuleThrottled = "throttled: too many denials to log each destination"

// NewThrottle writes through write, which must not call back into the
// throttle.
func NewThrottle(write func(*Record), window time.Duration, burst int) *Throttle {
	return &Throttle{write: write, window: window, burst: burst, keys: map[string]*quiet{}, others: map[string]*quiet{}}
}

// Deny writes r, a denial, or counts it in its key's window. It keeps no
// reference to r.
func (t *Throttle) Deny(r *Record, key string, now time.Time) {
	if t.Admit(r, key, now) {
		t.write(r)
	}
}

// Admit counts r, a denial, in its key's window, and reports whether it
// gets a line of its own, which the caller then writes (when it likes:
// the stack waits for its owner first). A denial it does not admit is
// summed up in a summary. It keeps no reference to r.
func (t *Throttle) Admit(r *Record, key string, now time.Time) bool {
	t.mu.Lock()
	due := t.dueLocked(now)
	if q := t.keys[key]; q != nil {
		q.suppressed++
		t.mu.Unlock()
		t.writeAll(due)
		return false
	}
	if len(t.keys) < t.burst {
		t.keys[key] = &quiet{rec: *r, start: now}
		t.expect(now)
		t.mu.Unlock()
		t.writeAll(due)
		return true
	}
	k := t.othersKey(r)
	q := t.others[k]
	if q == nil {
		q = &quiet{rec: Record{Kind: r.Kind, Verdict: Deny, Rule: RuleThrottled}, start: now}
		if k != r.Kind {
			q.rec.Client = r.Client
		}
		t.others[k] = q
		t.expect(now)
	}
	q.suppressed++
	t.mu.Unlock()
	t.writeAll(due)
	return false
}

// othersKey is where a denial with no line of its own is counted: by
// kind, and for a client of the egress proxy by its client's address too
// (without the port), so that one client filling the table cannot hide
// another's denials in its own count; past 2×Burst clients, by kind.
func (t *Throttle) othersKey(r *Record) string {
	if r.Client == "" {
		return r.Kind
	}
	host, _, err := net.SplitHostPort(r.Client)
	if err != nil {
		host = r.Client
	}
	k := r.Kind + " " + host
	if _, ok := t.others[k]; ok || len(t.others) < 2*t.burst {
		return k
	}
	return r.Kind
}

// Flush writes the summaries of the windows that ended by now. The stack
// calls it every second or so, so that a summary does not wait for the
// next denial.
func (t *Throttle) Flush(now time.Time) {
	t.mu.Lock()
	due := t.dueLocked(now)
	t.mu.Unlock()
	t.writeAll(due)
}

// dueLocked takes the windows that ended by now out of the tables and
// returns the summaries of those that kept something quiet.
func (t *Throttle) dueLocked(now time.Time) []*Record {
	if t.due.IsZero() || now.Before(t.due) {
		return nil
	}
	t.due = time.Time{}
	var due []*Record
	for _, m := range []map[string]*quiet{t.keys, t.others} {
		for k, q := range m {
			if now.Sub(q.start) < t.window {
				t.expect(q.start)
				continue
			}
			delete(m, k)
			if q.suppressed > 0 {
				due = append(due, q.summary(now))
			}
		}
	}
	return due
}

// expect notes that a window that began at start is in the tables.
func (t *Throttle) expect(start time.Time) {
	if end := start.Add(t.window); t.due.IsZero() || end.Before(t.due) {
		t.due = end
	}
}

func (t *Throttle) writeAll(rs []*Record) {
	for _, r := range rs {
		t.write(r)
	}
}

// summary is the line for a window: the first record's kind, rule and
// destination, and how many more there were.
func (q *quiet) summary(now time.Time) *Record {
	return &Record{
		Time: now, Kind: q.rec.Kind, Verdict: Deny, Rule: q.rec.Rule, Name: q.rec.Name, NameFrom: q.rec.NameFrom,
		Start: q.start, DurationMs: float64(now.Sub(q.start).Microseconds()) / 1000,
		Dst: q.rec.Dst, Method: q.rec.Method, Client: q.rec.Client, Suppressed: q.suppressed,
	}
}
