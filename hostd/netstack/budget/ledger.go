// Package budget adds up what an instance's API sessions spend, per
// session (an `ask`), per instance and per UTC day, and refuses a request
// once a budget is spent: a session's own (`cowork ask
// --max-tokens-total`, `--max-cost`) or the instance's daily one (its
// policy's budget).
//
// The relay asks Admit before it forwards a Messages API call, and
// Settles the call with what its answer cost. An answer's cost is known
// only once it is over, so the rule of admission holds a reservation for
// each request in flight: the largest answer counted yet, or more when
// the request itself says it may cost more (its body's bytes / 4 as
// input tokens, plus its max_tokens; priced, for a cost limit, at its
// model's dearest rate):
//
//   - a request is refused when a budget that applies to it is spent:
//     the answers counted have reached its limit;
//   - else it goes at once when, for each such budget, the spent total
//     plus the reservations of that budget's requests in flight plus its
//     own stays within the limit;
//   - else it waits until a request in flight is counted and is judged
//     again; with none of that budget in flight it goes, alone.
//
// A request is charged what its answer's usage says, and at least:
//
//   - for an answer cut short (its end never read, or a usage that could
//     not be read), its input plus its max_tokens (or, with none known,
//     the largest answer counted);
//   - for a request sent whole that got no answer (its client gave up
//     first), its reservation.
//
// So no request goes out once a budget is spent, and near the limit
// requests go one at a time, each judged on a total that counts every
// answer before it: the total passes the limit by at most the last
// answer (unless answers in flight together outgrow their reservations).
// The judgement and the reservations in flight change under one lock, so
// that requests racing at the limit are judged one after the other.
package budget

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/usage"
)

// Bounds of a limit: more tokens or dollars than anyone spends in a day
// is a typo.
const (
	MaxTokensLimit = 1_000_000_000_000
	MaxCostLimit   = 1_000_000
)

// Limit is a budget: tokens (every kind, see Totals.AllTokens), US
// dollars at the price table's prices, or both; zero is no limit.
type Limit struct {
	Tokens  int64   `json:"tokens,omitempty"`
	CostUSD float64 `json:"cost_usd,omitempty"`
}

// IsZero says there is no limit.
func (l Limit) IsZero() bool { return l == Limit{} }

// Check says what is wrong with a limit, naming its parts as tokensName
// and costName (the flags or fields a user sets).
func (l Limit) Check(tokensName, costName string) error {
	var errs []error
	if l.Tokens < 0 || l.Tokens > MaxTokensLimit {
		errs = append(errs, fmt.Errorf("%s %d: want a whole number of tokens from 1 to %s, or 0 for none", tokensName, l.Tokens, Tokens(MaxTokensLimit)))
	}
	if math.IsNaN(l.CostUSD) || l.CostUSD < 0 || l.CostUSD > MaxCostLimit {
		errs = append(errs, fmt.Errorf("%s %v: want US dollars above 0 and at most %s, or 0 for none", costName, l.CostUSD, USD(MaxCostLimit)))
	}
	return errors.Join(errs...)
}

// Config is where a Ledger keeps its totals and how it names its
// instance in a refusal.
type Config struct {
	// Store is the instance's usage.json (for a throwaway clone, its
	// parent's); nil counts in memory only.
	Store *Store
	// Instance names the instance in a refusal; PolicyCommand is the
	// command that changes its policy (cowork --name dev policy).
	Instance, PolicyCommand string
	// Clone is the throwaway clone's name, recorded with its sessions.
	Clone string
	Now   func() time.Time
}

// Ledger is an instance's accounts: its daily budget, its sessions and
// the requests in flight.
type Ledger struct {
	cfg     Config
	mu      sync.Mutex
	changed chan struct{} // closed when a request is counted
	daily   Limit
	file    *File // the totals, as last read or written
	stamp   stamp // of the store's file when it was read or written
	// refused are refusals by day not written yet: a guest that asks in a
	// loop must not have the file written for each.
	refused  map[string]int64
	inflight int
	held     Largest // the reservations of the requests in flight
	waiting  int     // requests waiting in Admit
}

// Waiting is how many requests wait in Admit for those in flight.
func (l *Ledger) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting
}

// New opens the accounts. A store whose file cannot be read is moved
// aside (usage.json.broken) and counting starts anew: warning says so,
// the ledger works all the same.
func New(cfg Config) (l *Ledger, warning error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l = &Ledger{cfg: cfg, changed: make(chan struct{}), refused: map[string]int64{}, file: &File{Version: fileVersion}}
	if cfg.Store != nil {
		f, st, err := cfg.Store.read()
		if err != nil {
			warning = err
			if rerr := os.Rename(cfg.Store.Path, cfg.Store.Path+".broken"); rerr == nil {
				warning = fmt.Errorf("%w (moved to %s.broken; counting starts anew)", err, cfg.Store.Path)
			}
			f = &File{Version: fileVersion}
		}
		l.file, l.stamp = f, st
	}
	return l, warning
}

// SetDaily sets the instance's daily budget (zero: none).
func (l *Ledger) SetDaily(lim Limit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.daily = lim
	l.wakeLocked()
}

// Today is today's totals (UTC).
func (l *Ledger) Today() Totals {
	l.mu.Lock()
	defer l.mu.Unlock()
	day := DayOf(l.cfg.Now())
	t := l.file.Today(day)
	t.Refused += l.refused[day]
	return t
}

// Ask is one session's account.
type Ask struct {
	l        *Ledger
	prices   *usage.Table
	rec      Session // under l.mu
	inflight int     // under l.mu
	held     Largest // under l.mu: the reservations of its requests in flight
	ended    bool
}

// Open opens a session's account: id and what (ask, claude) name it in
// usage.json, lim is its own budget, prices price its answers (nil:
// usage.Builtin).
func (l *Ledger) Open(id, what string, lim Limit, prices *usage.Table) *Ask {
	if prices == nil {
		prices = usage.Builtin()
	}
	return &Ask{l: l, prices: prices, rec: Session{ID: id, What: what, Instance: l.cfg.Clone, Started: l.cfg.Now().UTC(), Limit: lim}}
}

// Totals is the session's record so far.
func (a *Ask) Totals() Session {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	return a.rec
}

// Ticket is an admitted request; Settle it once its answer is over,
// however it ended.
type Ticket struct {
	a       *Ask
	day     string
	req     Request
	hold    Largest // its reservation
	settled bool
}

// Request is what is known of a request's cost before it goes.
type Request struct {
	// Model is the model it names; "" when unknown.
	Model string
	// InputTokens estimates its input: its body's bytes / 4.
	InputTokens int64
	// MaxTokens is its max_tokens, the most output its answer may hold; 0
	// when unknown.
	MaxTokens int64
}

// Admit judges a request under the rule above: a Ticket when it may go,
// a *Refusal when a budget is spent, ctx's cause when ctx ends while it
// waits.
func (a *Ask) Admit(ctx context.Context, req Request) (*Ticket, error) {
	l := a.l
	l.mu.Lock()
	for {
		// A waiter woken by both a settled request and its own end may
		// see either first (select picks at random): its end wins, so
		// no request goes for a client or a session that is gone.
		if ctx.Err() != nil {
			l.mu.Unlock()
			return nil, context.Cause(ctx)
		}
		day := DayOf(l.cfg.Now())
		if !l.daily.IsZero() {
			l.refreshLocked()
		}
		today := l.file.Today(day)
		if r := a.refusalLocked(day, today); r != nil {
			a.rec.Refused++
			l.refused[day]++
			if a.rec.Stopped == "" {
				a.rec.Stopped = r.Error()
			}
			l.mu.Unlock()
			return nil, r
		}
		hold := a.reservationLocked(req)
		if fits(a.rec.Totals, a.rec.Limit, a.inflight, a.held, hold) && fits(today, l.daily, l.inflight, l.held, hold) {
			a.inflight++
			l.inflight++
			a.held.add(hold, 1)
			l.held.add(hold, 1)
			l.mu.Unlock()
			return &Ticket{a: a, day: day, req: req, hold: hold}, nil
		}
		wait := l.changed
		l.waiting++
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done(): // the loop's first check returns its cause
		}
		l.mu.Lock()
		l.waiting--
	}
}

// reservationLocked is what a request is taken to cost while it is in
// flight: the largest answer counted yet, or what the request says it
// may cost when that is more.
func (a *Ask) reservationLocked(req Request) Largest {
	big := a.l.file.Largest
	n := min(req.InputTokens, usage.MaxTokens) + min(req.MaxTokens, usage.MaxTokens)
	price, _ := a.prices.Lookup(req.Model)
	return Largest{Tokens: max(big.Tokens, n), CostUSD: max(big.CostUSD, float64(n)*price.Dearest()/1e6)}
}

// add adds n times r.
func (l *Largest) add(r Largest, n int64) {
	l.Tokens += n * r.Tokens
	l.CostUSD += float64(n) * r.CostUSD
}

// fits says a request may go now under one budget: none of its requests
// in flight, or room for the reservations held and its own (a
// reservation of nothing, before any answer is counted: no room).
func fits(spent Totals, lim Limit, inflight int, held, hold Largest) bool {
	if inflight == 0 {
		return true
	}
	if lim.Tokens > 0 && (hold.Tokens == 0 || spent.AllTokens()+held.Tokens+hold.Tokens > lim.Tokens) {
		return false
	}
	if lim.CostUSD > 0 && (hold.CostUSD == 0 || spent.CostUSD+held.CostUSD+hold.CostUSD > lim.CostUSD) {
		return false
	}
	return true
}

// refusalLocked is the budget a request would pass, if any.
func (a *Ask) refusalLocked(day string, today Totals) *Refusal {
	l := a.l
	base := Refusal{What: a.rec.What, Instance: l.cfg.Instance, PolicyCommand: l.cfg.PolicyCommand, Day: day}
	for _, c := range []struct {
		daily bool
		lim   Limit
		spent Totals
	}{{false, a.rec.Limit, a.rec.Totals}, {true, l.daily, today}} {
		r := base
		r.Daily, r.Spent = c.daily, c.spent
		switch {
		case c.lim.Tokens > 0 && c.spent.AllTokens() >= c.lim.Tokens:
			r.Limit = Limit{Tokens: c.lim.Tokens}
			return &r
		case c.lim.CostUSD > 0 && c.spent.CostUSD >= c.lim.CostUSD:
			r.Limit = Limit{CostUSD: c.lim.CostUSD}
			return &r
		}
	}
	return nil
}

// Charge is what one answer was counted as, for its audit record.
type Charge struct {
	Model  string
	Tokens usage.Tokens
	// Estimated are tokens charged for an answer whose usage could not
	// be read; Note says so, or that its model was priced as unknown.
	Estimated int64
	CostUSD   float64
	Note      string
}

// Outcome is how a request's exchange ended.
type Outcome struct {
	// Status is the endpoint's answer's; 0 when no answer came.
	Status int
	// Sent says the request went to the endpoint whole.
	Sent bool
	// Request is what its body, read to its end, said (a body's later
	// max_tokens, its size); it raises the estimate it was admitted with.
	Request Request
}

// answered says the endpoint answered with success (a 2xx), which always
// carries a usage.
func (o Outcome) answered() bool { return o.Status/100 == 2 }

// Settle counts the request's answer: r is what its meter read, o how
// its exchange ended. An error answer costs nothing. A successful answer
// that was cut short, or carried a usage the meter could not read whole,
// is charged at least its input plus its max_tokens (with none known,
// the largest answer counted); a request sent whole whose answer never
// came, at least its reservation. Settling twice does nothing. The error
// is the store's: the answer is counted in memory all the same.
func (t *Ticket) Settle(r usage.Result, o Outcome) (Charge, error) {
	a, l := t.a, t.a.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.settled {
		return Charge{}, nil
	}
	t.settled = true
	a.inflight--
	l.inflight--
	a.held.add(t.hold, -1)
	l.held.add(t.hold, -1)
	defer l.wakeLocked()
	req := t.req
	if o.Sent {
		req.InputTokens = max(req.InputTokens, o.Request.InputTokens)
		req.MaxTokens = max(req.MaxTokens, o.Request.MaxTokens)
	}
	model := cmp.Or(r.Model, req.Model)
	c := Charge{Model: r.Model, Tokens: r.Tokens}
	price, known := a.prices.Lookup(model)
	c.CostUSD = price.Cost(r.Tokens)
	d := Totals{Requests: 1, Tokens: r.Tokens}
	switch {
	case o.Status == 0 && o.Sent:
		hold := a.reservationLocked(req)
		hold.Tokens, hold.CostUSD = max(hold.Tokens, t.hold.Tokens), max(hold.CostUSD, t.hold.CostUSD)
		c.Estimated = max(0, hold.Tokens-r.Tokens.Total())
		c.CostUSD = max(c.CostUSD, hold.CostUSD)
		c.Note = "the request was sent but no answer came: charged at its reservation"
	case o.answered() && (!r.Found || !r.Complete || r.Ignored > 0):
		floor, cost := r.Tokens, 0.0
		if floor.Input+floor.CacheWrite+floor.CacheRead == 0 {
			floor.Input = min(req.InputTokens, usage.MaxTokens)
		}
		if req.MaxTokens > 0 {
			floor.Output = max(floor.Output, min(req.MaxTokens, usage.MaxTokens))
		} else {
			big := l.file.Largest
			floor.Output += max(0, big.Tokens-floor.Total())
			cost = big.CostUSD
		}
		c.Estimated = floor.Total() - r.Tokens.Total()
		c.CostUSD = max(c.CostUSD, price.Cost(floor), cost)
		switch {
		case !r.Found:
			c.Note = "no usage could be read in the answer"
		case !r.Complete:
			c.Note = "the answer was cut short"
		default:
			c.Note = "part of the answer's usage could not be read"
		}
		if req.MaxTokens > 0 {
			c.Note += ": charged at least its input and its max_tokens"
		} else {
			c.Note += ": charged at least the largest answer yet"
		}
	case r.Found && !known:
		d.Unpriced = 1
		c.Note = fmt.Sprintf("model %q is not in the price table: priced at its price for unknown models", r.Model)
	}
	d.Estimated, d.CostUSD = c.Estimated, c.CostUSD
	a.rec.Totals.Add(d)
	err := l.writeLocked(func(f *File) {
		f.day(t.day).Totals.Add(d)
		if r.Found {
			f.Largest.Tokens = max(f.Largest.Tokens, r.Tokens.Total())
			f.Largest.CostUSD = max(f.Largest.CostUSD, price.Cost(r.Tokens))
		}
		f.putSession(a.rec)
	})
	return c, err
}

// End closes the session's account and returns its record, written to
// the store when it made or was refused a request. Requests still in
// flight are counted when they settle.
func (a *Ask) End() (Session, error) {
	l := a.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.ended {
		return a.rec, nil
	}
	a.ended = true
	a.rec.Ended = l.cfg.Now().UTC()
	if a.rec.Requests == 0 && a.rec.Refused == 0 {
		return a.rec, nil
	}
	return a.rec, l.writeLocked(func(f *File) { f.putSession(a.rec) })
}

// wakeLocked has the requests waiting for admission judged again.
func (l *Ledger) wakeLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// writeLocked changes the totals with fn, with the refusals not written
// yet, in the store when there is one. A store that fails leaves the
// change in memory (admissions still count it) and says why.
func (l *Ledger) writeLocked(fn func(*File)) error {
	flush := func(f *File) {
		fn(f)
		for day, n := range l.refused {
			f.day(day).Refused += n
		}
	}
	if l.cfg.Store != nil {
		f, st, err := l.cfg.Store.update(flush)
		if err == nil {
			l.file, l.stamp = f, st
			clear(l.refused)
			return nil
		}
		fn(l.file)
		return err
	}
	flush(l.file)
	l.file.prune()
	clear(l.refused)
	return nil
}

// refreshLocked reads the store again when another hostd (a throwaway
// clone's, or the parent's) wrote it since, so that the daily budget
// counts what they spent.
func (l *Ledger) refreshLocked() {
	if l.cfg.Store == nil {
		return
	}
	s := stampOf(l.cfg.Store.Path)
	if s == l.stamp {
		return
	}
	if f, st, err := l.cfg.Store.read(); err == nil {
		l.file, l.stamp = f, st
	}
}

// stamp tells one version of a file from another: each write renames a
// new file over it.
type stamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(path string) stamp {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stampOfInfo(st)
}

func stampOfInfo(st os.FileInfo) stamp { return stamp{st.ModTime(), st.Size(), inode(st)} }
