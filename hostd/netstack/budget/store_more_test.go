package budget

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/usage"
)

// Two hostds (an instance's and a throwaway clone's) writing one store
// lose none of each other's answers. This fails without the lock.
func TestTwoHostdsWriteOneStore(t *testing.T) {
	st := newStore(t)
	var wg sync.WaitGroup
	for i := range 2 {
		name := string(rune('a' + i))
		l, warn := New(Config{Store: st, Clone: name})
		if warn != nil {
			t.Fatal(warn)
		}
		a := l.Open(name, "ask", Limit{}, nil)
		wg.Go(func() { spend(t, a, make([]int64, 50)...) })
	}
	wg.Wait()
	if f, err := st.Read(); err != nil || len(f.Days) != 1 || f.Days[0].Requests != 100 || len(f.Sessions) != 2 {
		t.Fatalf("lost updates: %v %+v", err, f)
	}
}

// A usage file over 1 MiB is more than cowork writes: it is not read
// (nor kept in memory whole), even when it is valid JSON.
func TestAStoreOverItsBoundIsNotRead(t *testing.T) {
	st := newStore(t)
	body := `{"version":1,"days":[],"sessions":[]` + strings.Repeat(" ", maxFile) + "}"
	if err := os.WriteFile(st.Path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Read(); err == nil || !strings.Contains(err.Error(), "over 1024 KiB") {
		t.Fatalf("%v", err)
	}
}

// A hand-edited file's negative totals do not leave room under a
// budget: they are taken as zero.
func TestNegativeTotalsDoNotTurnABudgetOff(t *testing.T) {
	st := newStore(t)
	now := time.Now()
	day := DayOf(now)
	body := `{"version":1,"largest":{"tokens":-5,"cost_usd":-1},"days":[{"day":"` + day + `","requests":1,"input_tokens":-1000000000,"cost_usd":-1000}],"sessions":[]}`
	if err := os.WriteFile(st.Path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	l, warn := New(Config{Store: st})
	if warn != nil {
		t.Fatal(warn)
	}
	l.SetDaily(Limit{Tokens: 1000, CostUSD: 0.01})
	if got := l.Today(); got.AllTokens() != 0 || got.CostUSD != 0 {
		t.Fatalf("%+v", got)
	}
	a := l.Open("s", "ask", Limit{}, nil)
	spend(t, a, 1000)
	var r *Refusal
	if _, err := a.Admit(context.Background(), Request{}); !errors.As(err, &r) {
		t.Fatalf("after 1,000 tokens of 1,000: %v", err)
	}
}

// Under a token limit, with no answer counted yet and nothing known of
// the request, the first request in flight goes alone: the second waits
// for it. This fails when a reservation of nothing is taken to fit.
func TestTheFirstRequestGoesAloneUnderATokenLimit(t *testing.T) {
	_, a, first := firstGoesAlone(t, Limit{Tokens: 1000})
	first.Settle(answer(10), answered)
	if _, err := a.Admit(context.Background(), Request{}); err != nil {
		t.Fatal(err)
	}
}

// An answer cut short, or with a usage not read whole, is charged its
// input and its max_tokens; one with no max_tokens known, the largest
// answer; a request sent whole with no answer, its reservation (priced
// at the model's dearest rate); one never sent, or answered with an
// error, nothing.
func TestWhatAnAnswerNotReadWholeCosts(t *testing.T) {
	l, _ := New(Config{})
	a := l.Open("s1", "ask", Limit{}, nil)
	spend(t, a, 3000) // the largest answer
	req := Request{Model: "claude-sonnet-4-5", InputTokens: 100, MaxTokens: 5000}
	cut := answer(1)
	cut.Tokens.Input, cut.Complete = 100, false
	unread := answer(1)
	unread.Tokens.Input, unread.Ignored = 100, 1
	for _, c := range []struct {
		name string
		req  Request
		r    usage.Result
		o    Outcome
		est  int64
		cost float64
	}{
		{"cut", req, cut, answered, 4999, (100*3 + 5000*15) / 1e6},
		{"ignored", req, unread, answered, 4999, (100*3 + 5000*15) / 1e6},
		{"cut, no max_tokens", Request{InputTokens: 100}, cut, answered, 2899, 3000 * 15 / 1e6},
		{"no answer", req, usage.Result{}, Outcome{Sent: true}, 5100, 5100 * 15 / 1e6},
		{"later max_tokens", req, usage.Result{}, Outcome{Sent: true, Request: Request{MaxTokens: 9000}}, 9100, 9100 * 15 / 1e6},
		{"not sent", req, usage.Result{}, Outcome{}, 0, 0},
		{"error answer", req, usage.Result{}, Outcome{Status: 529, Sent: true}, 0, 0},
	} {
		tk, _ := a.Admit(context.Background(), c.req)
		ch, _ := tk.Settle(c.r, c.o)
		if ch.Estimated != c.est || !near(ch.CostUSD, c.cost) {
			t.Errorf("%s: %+v, want %d estimated, $%v", c.name, ch, c.est, c.cost)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
