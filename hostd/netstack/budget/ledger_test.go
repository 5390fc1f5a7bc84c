package budget

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/usage"
)

// answer is a counted answer of n output tokens of a model priced in the
// built-in table.
func answer(n int64) usage.Result {
	return usage.Result{Model: "claude-sonnet-4-5", Found: true, Complete: true, Tokens: usage.Tokens{Output: n}}
}

// answered is an exchange the endpoint answered with success.
var answered = Outcome{Status: 200, Sent: true}

func spend(t *testing.T, a *Ask, answers ...int64) {
	t.Helper()
	for _, n := range answers {
		tk, err := a.Admit(context.Background(), Request{})
		if err != nil {
			t.Fatalf("admit: %v", err)
		}
		if _, err := tk.Settle(answer(n), answered); err != nil {
			t.Fatal(err)
		}
	}
}

func newStore(t *testing.T) *Store {
	dir := t.TempDir()
	return &Store{Path: filepath.Join(dir, "usage.json"), Lock: filepath.Join(dir, "usage.lock")}
}

// race sends 16 requests at once to a and reports how many were admitted,
// and how many of those went past the budget: their answer came when the
// answers counted before it had already spent the budget. (The last
// answer may take the total past the limit; one after it must not come.)
// Each admitted request is in flight for a while, then counted as an
// answer of n tokens.
func race(t *testing.T, a *Ask, limit, n int64) (admitted, past int) {
	t.Helper()
	var wg sync.WaitGroup
	var adm, pst atomic.Int64
	var mu sync.Mutex // the test's own view of what was counted
	counted := a.Totals().AllTokens()
	start := make(chan struct{})
	for range 16 {
		wg.Go(func() {
			<-start
			tk, err := a.Admit(context.Background(), Request{})
			var r *Refusal
			if errors.As(err, &r) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			adm.Add(1)
			time.Sleep(20 * time.Millisecond) // in flight
			mu.Lock()
			if counted >= limit {
				pst.Add(1)
			}
			counted += n
			tk.Settle(answer(n), answered)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return int(adm.Load()), int(pst.Load())
}

// 16 requests race at the limit of an ask's budget: the spend is below
// it, the largest answer would take it past, so they go one at a time
// and those left when it is spent are refused. None goes out past the
// budget. This fails when the judgement and the count of requests in
// flight are not made under one lock.
func TestSixteenRequestsRacingAtTheLimit(t *testing.T) {
	l, _ := New(Config{Store: newStore(t), Instance: "box"})
	a := l.Open("s1", "ask", Limit{Tokens: 1000}, nil)
	spend(t, a, 110, 110, 110, 110, 110, 110, 110, 110) // 880: room for two answers, one at a time
	admitted, past := race(t, a, 1000, 110)
	if admitted != 2 || past != 0 {
		t.Fatalf("%d admitted, %d past the budget; want 2 and 0", admitted, past)
	}
	rec := a.Totals()
	if rec.AllTokens() != 1100 || rec.Requests != 10 || rec.Refused != 14 || !strings.Contains(rec.Stopped, "budget of 1,000 tokens for this ask is reached (spent 1,100 tokens)") {
		t.Fatalf("%+v", rec)
	}
}

// Far from the limit requests run side by side, as many as the largest
// answer fits times; then one at a time; the total passes the limit by
// the last answer at most.
func TestRequestsRunSideBySideWhileThereIsRoom(t *testing.T) {
	l, _ := New(Config{Instance: "box"})
	a := l.Open("s1", "ask", Limit{Tokens: 1000}, nil)
	spend(t, a, 100) // the largest answer: 100
	var maxInFlight, inFlight atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			tk, err := a.Admit(context.Background(), Request{})
			if err != nil {
				return
			}
			maxInFlight.Store(max(maxInFlight.Load(), inFlight.Add(1)))
			time.Sleep(30 * time.Millisecond)
			inFlight.Add(-1)
			tk.Settle(answer(100), answered)
		})
	}
	wg.Wait()
	rec := a.Totals()
	// 100 spent + 9 in flight × 100 ≤ 1000: nine at once, then the
	// other seven refused: 1000 is spent when those nine are counted.
	if m := maxInFlight.Load(); m < 2 || m > 9 || rec.AllTokens() != 1000 || rec.Refused != 7 {
		t.Fatalf("at most %d in flight, %+v", m, rec)
	}
}

// Before any answer is counted, a request in flight may cost anything:
// the next waits for it.
func TestTheFirstRequestGoesAlone(t *testing.T) {
	l, a, first := firstGoesAlone(t, Limit{CostUSD: 1})
	got := make(chan error, 1)
	go func() { _, err := a.Admit(context.Background(), Request{}); got <- err }()
	time.Sleep(20 * time.Millisecond)
	first.Settle(answer(1000), answered)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// A request whose client or session is gone never goes, even with
	// room for it: a waiter woken at once by its end and by a settled
	// request must not be admitted.
	gone, end := context.WithCancelCause(context.Background())
	end(errors.New("the session ended"))
	if tk, err := a.Admit(gone, Request{}); tk != nil || err == nil || err.Error() != "the session ended" {
		t.Fatalf("admitted after its end: %v %v", tk, err)
	}
	// Without a budget nothing waits.
	free := l.Open("s2", "ask", Limit{}, nil)
	for range 4 {
		if _, err := free.Admit(context.Background(), Request{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCostBudgetAndPrices(t *testing.T) {
	l, _ := New(Config{})
	a := l.Open("s1", "claude", Limit{CostUSD: 0.01}, nil)
	// sonnet: 1,000 output tokens cost $0.015
	tk, _ := a.Admit(context.Background(), Request{})
	c, _ := tk.Settle(answer(1000), answered)
	if c.CostUSD != 0.015 || c.Note != "" {
		t.Fatalf("%+v", c)
	}
	_, err := a.Admit(context.Background(), Request{})
	if err == nil || err.Error() != "cowork: the budget of $0.0100 for this claude session is reached (spent $0.0150); raise it with --max-cost USD, or leave it out for none" {
		t.Fatalf("%v", err)
	}
	// An unknown model is priced at the table's highest prices, and says so.
	b := l.Open("s2", "ask", Limit{}, nil)
	tk, _ = b.Admit(context.Background(), Request{})
	c, _ = tk.Settle(usage.Result{Model: "claude-test-1", Found: true, Complete: true, Tokens: usage.Tokens{Output: 1000}}, answered)
	if c.CostUSD != 0.075 || !strings.Contains(c.Note, `"claude-test-1" is not in the price table`) || b.Totals().Unpriced != 1 {
		t.Fatalf("%+v", c)
	}
	// An answer whose usage could not be read is charged as the largest
	// yet; an error answer costs nothing.
	tk, _ = b.Admit(context.Background(), Request{})
	c, _ = tk.Settle(usage.Result{}, answered)
	if c.Estimated != 1000 || c.CostUSD != 0.075 || !strings.Contains(c.Note, "no usage") {
		t.Fatalf("unread: %+v", c)
	}
	tk, _ = b.Admit(context.Background(), Request{})
	if c, _ = tk.Settle(usage.Result{}, Outcome{Status: 400, Sent: true}); c.Estimated != 0 || c.CostUSD != 0 {
		t.Fatalf("error answer: %+v", c)
	}
	if rec := b.Totals(); rec.Requests != 3 || rec.AllTokens() != 2000 || rec.CostUSD != 0.15 {
		t.Fatalf("%+v", rec)
	}
}

// The daily budget covers every session of the instance, and of its
// throwaway clones writing the same store; the day's refusals are
// counted.
func TestDailyBudgetAcrossSessionsAndClones(t *testing.T) {
	store := newStore(t)
	now := time.Date(2025, 6, 1, 23, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	parent, _ := New(Config{Store: store, Instance: "box", PolicyCommand: "cowork --name box policy", Now: clock})
	parent.SetDaily(Limit{Tokens: 500})
	clone, _ := New(Config{Store: store, Instance: "box", Clone: "box-run-1", Now: clock})
	clone.SetDaily(Limit{Tokens: 500})
	spend(t, parent.Open("a", "ask", Limit{}, nil), 200)
	spend(t, clone.Open("b", "ask", Limit{}, nil), 300)
	c := parent.Open("c", "ask", Limit{}, nil)
	_, err := c.Admit(context.Background(), Request{})
	want := "cowork: the daily budget of 500 tokens for instance box is reached (spent 500 tokens on 2025-06-01, UTC); it renews at 00:00 UTC, or raise it with `cowork --name box policy budget --daily-tokens N`"
	if err == nil || err.Error() != want {
		t.Fatalf("%v", err)
	}
	if _, err := c.End(); err != nil {
		t.Fatal(err)
	}
	f, _ := store.Read()
	if len(f.Days) != 1 || f.Days[0].AllTokens() != 500 || f.Days[0].Requests != 2 || f.Days[0].Refused != 1 ||
		len(f.Sessions) != 3 || f.Sessions[1].Instance != "box-run-1" || f.Sessions[2].Refused != 1 || f.Sessions[2].Stopped != want {
		t.Fatalf("%+v", f)
	}
	// A new day, a new budget.
	now = now.Add(2 * time.Hour)
	spend(t, c, 10)
	if got := parent.Today(); got.AllTokens() != 10 {
		t.Fatalf("today: %+v", got)
	}
	// A hostd restarted reads where it was.
	again, warn := New(Config{Store: store, Now: clock})
	again.SetDaily(Limit{Tokens: 10})
	if _, err := again.Open("d", "ask", Limit{}, nil).Admit(context.Background(), Request{}); warn != nil || err == nil {
		t.Fatalf("after a restart: %v %v", warn, err)
	}
}

func TestLimitCheck(t *testing.T) {
	for _, l := range []Limit{{Tokens: -1}, {Tokens: MaxTokensLimit + 1}, {CostUSD: -0.5}, {CostUSD: 2e6}} {
		if err := l.Check("--max-tokens-total", "--max-cost"); err == nil {
			t.Errorf("%+v passed", l)
		}
	}
	if err := (Limit{Tokens: 5, CostUSD: 1.5}).Check("a", "b"); err != nil {
		t.Error(err)
	}
}

func TestFormats(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := Tokens(n); got != want {
			t.Errorf("%d: %s", n, got)
		}
	}
	for x, want := range map[float64]string{0: "$0.0000", 0.01234: "$0.0123", 1.5: "$1.50", 1234.999: "$1,235.00", 12.345: "$12.35"} {
		if got := USD(x); got != want {
			t.Errorf("%v: %s", x, got)
		}
	}
}

// firstGoesAlone opens an account under lim, admits a first request of
// which nothing is known, and checks that a second one waits for it.
func firstGoesAlone(t *testing.T, lim Limit) (*Ledger, *Ask, *Ticket) {
	t.Helper()
	l, _ := New(Config{})
	a := l.Open("s1", "ask", lim, nil)
	first, err := a.Admit(context.Background(), Request{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Admit(ctx, Request{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second: %v, want it to wait", err)
	}
	return l, a, first
}
