//go:build linux

package netstack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// messagesBody is a Messages API request of about size bytes asking for
// up to maxTokens of output.
func messagesBody(stream bool, maxTokens, size int) string {
	b, _ := json.Marshal(map[string]any{"model": "claude-opus-4-1", "stream": stream, "max_tokens": maxTokens,
		"messages": []any{map[string]any{"role": "user", "content": strings.Repeat("x", size)}}})
	return string(b)
}

// post sends a Messages API call from the guest under ctx.
func (tn *testNet) post(ctx context.Context, placeholder, body string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", relayURL("/v1/messages"), strings.NewReader(body))
	req.Header.Set("X-Api-Key", placeholder)
	req.Header.Set("Content-Type", "application/json")
	return tn.guestClient().Do(req)
}

// countingAPI answers the Messages API with answer, counting the calls
// that reach it.
func countingAPI(t *testing.T, answer http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/messages" {
			n.Add(1)
		}
		answer(w, r)
	}))
	t.Cleanup(api.Close)
	return api, &n
}

// A guest that hangs up on a stream after message_start (which counts 1
// output token) and before message_delta (which counts the rest) must not
// have the answer's output go uncounted: an answer cut short is charged
// its input and its max_tokens. This fails when the relay settles with
// the usage read so far.
func TestRelayChargesAnAnswerCutShort(t *testing.T) {
	api, calls := countingAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-4-1\",\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n"+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"MARK\"}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5000}}\n\n")
	})
	tn := newTestNet(t, policy.Policy{})
	sess, err := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real", What: "ask", Budget: budget.Limit{Tokens: 2000}})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		resp, err := tn.post(context.Background(), sess.Placeholder, messagesBody(true, 5000, 10))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 200 {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() && !strings.Contains(sc.Text(), "MARK") {
			}
		}
		resp.Body.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for sess.Usage().Requests < calls.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the last settles once the relay sees the hang-up
	}
	if u := sess.Usage(); calls.Load() > 1 || u.AllTokens() < 2000 {
		t.Fatalf("%d calls reached the API; counted %d tokens (%+v)", calls.Load(), u.AllTokens(), u)
	}
}

// A request in flight is reserved at what it may cost, not only at the
// largest answer seen (which the guest sets with a tiny request first):
// 16 large requests racing after an 11-token answer go one at a time, and
// none after the first that spends the budget. This fails when requests
// in flight are reserved at the largest answer alone.
func TestRelayReservesWhatARequestMayCost(t *testing.T) {
	var big atomic.Int64
	api, _ := countingAPI(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		input := 10
		if len(body) > 1000 {
			big.Add(1)
			input = 100_000
			time.Sleep(50 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"type":"message","model":"claude-opus-4-1","content":[],"usage":{"input_tokens":%d,"output_tokens":1}}`, input)
	})
	tn := newTestNet(t, policy.Policy{})
	sess, _ := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real", What: "ask", Budget: budget.Limit{Tokens: 1000}})
	resp, err := tn.post(context.Background(), sess.Placeholder, messagesBody(false, 1, 1))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			resp, err := tn.post(context.Background(), sess.Placeholder, messagesBody(false, 1, 400_000))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if u := sess.Usage(); big.Load() > 1 {
		t.Fatalf("%d large requests reached the API past a budget of 1,000 tokens (%+v)", big.Load(), u)
	}
}

// A request the guest gives up on before its answer comes was sent all
// the same, and the endpoint may bill it: it is charged at its
// reservation, and once those reach the budget the next are refused.
// This fails when a request with no answer is charged nothing.
func TestRelayChargesARequestGivenUp(t *testing.T) {
	api, calls := countingAPI(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"type":"message","model":"claude-opus-4-1","content":[],"usage":{"input_tokens":10,"output_tokens":1000}}`)
	})
	tn := newTestNet(t, policy.Policy{})
	sess, _ := tn.Sessions().OpenRequest(SessionRequest{Endpoint: api.URL, APIKey: "sk-real", What: "ask", Budget: budget.Limit{Tokens: 1000}})
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if resp, err := tn.post(ctx, sess.Placeholder, messagesBody(false, 1000, 10)); err == nil {
			resp.Body.Close() // a refusal (or, on a slow host, a wait cut)
		}
		cancel()
	}
	// The next is refused once the first is counted.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := tn.post(ctx, sess.Placeholder, messagesBody(false, 1000, 10))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if u := sess.Usage(); calls.Load() > 1 || resp.StatusCode != http.StatusPaymentRequired || u.AllTokens() < 1000 {
		t.Fatalf("%d calls reached the API, the next got %d; counted %d tokens (%+v)", calls.Load(), resp.StatusCode, u.AllTokens(), u)
	}
}
