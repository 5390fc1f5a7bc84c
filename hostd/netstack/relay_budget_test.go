//go:build linux

package netstack

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/fakeapi"
)

// meteredAPI is the fake Messages API (each answer 100 input and 20
// output tokens), answering in gzip when asked, slowly when told, and
// keeping count of the tokens its finished answers hold when each request
// arrives.
type meteredAPI struct {
	*httptest.Server
	delay    time.Duration
	mu       sync.Mutex
	answered int64   // tokens of the answers finished
	arrived  []int64 // answered, as each Messages request arrived
}

func newMeteredAPI(t *testing.T) *meteredAPI {
	api := fakeapi.New()
	m := &meteredAPI{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		messages := r.URL.Path == "/v1/messages"
		if messages {
			m.mu.Lock()
			m.arrived = append(m.arrived, m.answered)
			m.mu.Unlock()
			time.Sleep(m.delay)
			defer func() {
				m.mu.Lock()
				m.answered += 120
				m.mu.Unlock()
			}()
		}
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzip.NewWriter(w)
			defer gz.Close()
			api.ServeHTTP(gzipWriter{ResponseWriter: w, gz: gz}, r)
			return
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(m.Close)
	return m
}

type gzipWriter struct {
	http.ResponseWriter
	gz *gzip.Writer
}

func (g gzipWriter) Write(p []byte) (int, error) { return g.gz.Write(p) }
func (g gzipWriter) Flush()                      { g.gz.Flush(); g.ResponseWriter.(http.Flusher).Flush() }

func (m *meteredAPI) arrivals() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int64(nil), m.arrived...)
}

// ask sends one Messages API call from the guest, streamed or not, and
// returns the answer's status, body and headers.
func (tn *testNet) ask(t *testing.T, placeholder string, stream bool, header http.Header) (int, string, http.Header) {
	t.Helper()
	code, body, h, err := tn.tryAsk(placeholder, stream, header)
	if err != nil {
		t.Errorf("ask: %v", err)
	}
	return code, body, h
}

func (tn *testNet) tryAsk(placeholder string, stream bool, header http.Header) (int, string, http.Header, error) {
	body, _ := json.Marshal(map[string]any{"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 100,
		"messages": []any{map[string]any{"role": "user", "content": randomHex(8)}}})
	req, _ := http.NewRequest("POST", relayURL("/v1/messages"), strings.NewReader(string(body)))
	req.Header.Set("X-Api-Key", placeholder)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := tn.guestClient().Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

// Every answer's usage is read, streamed or not, compressed or not (the
// guest's Accept-Encoding is not passed on: the transport asks for gzip
// and decodes it), and written into its audit record with its cost.
func TestRelayCountsEveryAnswer(t *testing.T) {
	api := newMeteredAPI(t)
	tn := newTestNet(t, policy.Policy{})
	sess, _ := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real", What: "ask"})
	for _, stream := range []bool{true, false} {
		for _, enc := range []string{"", "gzip, deflate, br"} {
			h := http.Header{}
			if enc != "" {
				h.Set("Accept-Encoding", enc)
			}
			code, body, _ := tn.ask(t, sess.Placeholder, stream, h)
			if code != 200 || !strings.Contains(body, "replies)") {
				t.Fatalf("stream %v, %q: %d %s", stream, enc, code, body)
			}
		}
	}
	recs := tn.records(func(r *audit.Record) bool { return r.Session == sess.ID })
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		want := audit.Usage{Model: "claude-sonnet-4-5", InputTokens: 100, OutputTokens: 20, CostUSD: (100*3 + 20*15) / 1e6}
		if r.Usage == nil || *r.Usage != want || r.Verdict != audit.Allow {
			t.Errorf("%+v", r.Usage)
		}
	}
	u := sess.Usage()
	if u.Requests != 4 || u.AllTokens() != 480 || u.What != "ask" {
		t.Fatalf("%+v", u)
	}
	// The free calls are not counted.
	code, _ := tn.relayDo(t, "POST", "/v1/messages/count_tokens", apiKey(sess.Placeholder))
	if code != 200 || sess.Usage().Requests != 4 {
		t.Fatalf("count_tokens: %d %+v", code, sess.Usage())
	}
}

// 16 requests race at the limit of an ask's budget through the relay:
// none reaches the API once the budget is spent. Sequential requests
// spend 840 of 1000 tokens (120 an answer); of the 16 racing, two go, one
// after the other (840 and 960 are under the limit; two at once might
// pass it), and 14 are refused with an error Claude Code shows. This
// fails when the relay does not ask the budget before it forwards, and
// when the budget's judgement is not atomic (see budget's own test).
func TestRelayBudgetHoldsAgainstARace(t *testing.T) {
	api := newMeteredAPI(t)
	tn := newTestNet(t, policy.Policy{})
	sess, err := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real", What: "ask", Budget: budget.Limit{Tokens: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		if code, body, _ := tn.ask(t, sess.Placeholder, true, nil); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	api.delay = 50 * time.Millisecond
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	start := make(chan struct{})
	for range 16 {
		wg.Go(func() {
			<-start
			code, body, h := tn.ask(t, sess.Placeholder, true, nil)
			switch {
			case code == 200:
				ok.Add(1)
			case code == http.StatusPaymentRequired && apiErrorType(body) == "billing_error" && h.Get("X-Should-Retry") == "false" &&
				strings.Contains(body, "cowork: the budget of 1,000 tokens for this ask is reached (spent 1,080 tokens); raise it with --max-tokens-total N"):
				refused.Add(1)
			default:
				t.Errorf("%d %s", code, body)
			}
		})
	}
	close(start)
	wg.Wait()
	// A request went past the budget when the answers to the requests
	// that reached the API before it (120 tokens each) spent the budget
	// however it went: from the tenth on (9 × 120 = 1,080).
	arrived := api.arrivals()
	past := max(0, len(arrived)-9)
	if ok.Load() != 2 || refused.Load() != 14 || len(arrived) != 9 || past != 0 {
		t.Fatalf("%d answered, %d refused; the API got %d requests, %d past the budget (tokens answered when each came: %v)",
			ok.Load(), refused.Load(), len(arrived), past, arrived)
	}
	// The audit says why each was refused (the first lines; a burst of
	// refusals is rate-limited like the relay's others).
	denied := tn.records(func(r *audit.Record) bool { return r.Session == sess.ID && r.Verdict == audit.Deny })
	if len(denied) != 14 || denied[0].Rule != BudgetRefused || denied[0].Status != 402 || !strings.Contains(denied[0].Error, "budget of 1,000 tokens for this ask is reached") {
		t.Fatalf("%d denials: %+v", len(denied), denied[0])
	}
	if u := sess.Usage(); u.Requests != 9 || u.Refused != 14 || u.AllTokens() != 1080 {
		t.Fatalf("%+v", u)
	}
}

// The policy's daily budget covers every session; raising it lets the
// next request through at once.
func TestRelayDailyBudget(t *testing.T) {
	api := newMeteredAPI(t)
	ledger, _ := budget.New(budget.Config{Instance: "box", PolicyCommand: "cowork --name box policy"})
	tn := newTestNet(t, policy.Policy{Budget: &policy.Budget{DailyTokens: 200}}, func(c *Config) { c.Ledger = ledger })
	one, _ := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real"})
	two, _ := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real"})
	tn.ask(t, one.Placeholder, false, nil)
	tn.ask(t, two.Placeholder, true, nil)
	code, body, _ := tn.ask(t, one.Placeholder, false, nil)
	if code != 402 || !strings.Contains(body, "the daily budget of 200 tokens for instance box is reached (spent 240 tokens on "+budget.DayOf(time.Now())+
		", UTC); it renews at 00:00 UTC, or raise it with `cowork --name box policy budget --daily-tokens N`") {
		t.Fatalf("%d %s", code, body)
	}
	if err := tn.SetPolicy(policy.Policy{Budget: &policy.Budget{DailyTokens: 1000}}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := tn.ask(t, two.Placeholder, false, nil); code != 200 {
		t.Fatalf("after raising it: %d %s", code, body)
	}
	if err := tn.SetPolicy(policy.Policy{Budget: &policy.Budget{DailyTokens: -1}}); err == nil || !strings.Contains(err.Error(), "budget daily_tokens -1") {
		t.Fatalf("%v", err)
	}
}

// A request waiting for the requests in flight ends with its session.
func TestRelayBudgetWaitEndsWithTheSession(t *testing.T) {
	api := newMeteredAPI(t)
	tn := newTestNet(t, policy.Policy{})
	// Each request is reserved at about $0.002 (129 tokens at sonnet's
	// dearest rate): two do not fit.
	sess, _ := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real", Budget: budget.Limit{CostUSD: 0.003}})
	api.delay = 5 * time.Second               // the first is in flight, and no answer is counted yet
	go tn.tryAsk(sess.Placeholder, true, nil) // cut when the session ends
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		api.mu.Lock()
		n := len(api.arrived)
		api.mu.Unlock()
		if n == 1 {
			break // the first is in flight: the next waits
		}
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached the API")
		}
	}
	// The session ends once the second waits for the first (not before:
	// under load it may take a while to get there).
	go func() {
		for deadline := time.Now().Add(10 * time.Second); tn.sessions.ledger.Waiting() == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		tn.Sessions().Close(sess.ID)
	}()
	code, body, _ := tn.ask(t, sess.Placeholder, true, nil)
	if code != 401 || !strings.Contains(body, "this session has ended") {
		t.Fatalf("%d %s", code, body)
	}
	r := tn.waitRecord(t, func(r *audit.Record) bool { return r.Session == sess.ID && r.Rule == BudgetWaitCut })
	if !strings.Contains(r.Error, "the session ended") {
		t.Fatalf("%+v", r)
	}
}
