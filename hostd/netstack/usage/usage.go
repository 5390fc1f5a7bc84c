// Package usage reads what a Messages API answer cost: the token counts in
// its usage (a JSON answer's, or a stream's message_start and
// message_delta events), read as the answer is forwarded, in bounded
// memory, and the price of those tokens from a table (prices.json, which a
// user may extend). The relay meters every answer with it; the budget
// package adds the results up.
package usage

// MaxTokens bounds each count of one answer: no answer holds a billion
// tokens, and a bound keeps an upstream's nonsense from overflowing a
// total. A count over it is taken as MaxTokens (the budget then trips,
// which errs on the safe side).
const MaxTokens = 1_000_000_000

// Tokens are an answer's token counts, under the API's own names.
type Tokens struct {
	Input      int64 `json:"input_tokens"`
	Output     int64 `json:"output_tokens"`
	CacheWrite int64 `json:"cache_creation_input_tokens"`
	CacheRead  int64 `json:"cache_read_input_tokens"`
}

// Total is every token the answer counted: input, output, and the cache's
// writes and reads. A token budget counts them all.
func (t Tokens) Total() int64 { return t.Input + t.Output + t.CacheWrite + t.CacheRead }

// Add adds u to t.
func (t *Tokens) Add(u Tokens) {
	t.Input += u.Input
	t.Output += u.Output
	t.CacheWrite += u.CacheWrite
	t.CacheRead += u.CacheRead
}

// IsZero says no token was counted.
func (t Tokens) IsZero() bool { return t == Tokens{} }

// bound is a count as the meter keeps it: nothing negative, nothing
// over MaxTokens.
func bound(n int64) int64 {
	return max(0, min(n, MaxTokens))
}
