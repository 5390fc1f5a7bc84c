// Package lograte keeps a log from being flooded: a slog.Handler that
// passes each message (its text, whatever its attributes) at most Burst
// times at once and then once every Every, and says on the next line it
// passes how many it held back.
//
// hostd's log and the agent's say what the guest did: a yamux session
// that breaks, a DHCP request it cannot answer, a relay answer cut short.
// A guest can do those things in a loop. Rotation bounds the log's size
// (internal/rotlog); this bounds how much of it one repeated complaint
// takes, so the rest is still there to read.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults: 20 lines of a message at once, then one every 10 seconds.
const (
	DefaultBurst = 20
	DefaultEvery = 10 * time.Second
)

// maxKeys bounds the messages tracked apart. A new message takes the
// place of one that has been quiet long enough to have its whole burst
// back; when all are busy, it shares one limit with the others like it,
// so that messages made unique (a guest's text in them) can neither grow
// the table nor slip past the limit.
const maxKeys = 256

// overflow is the key the messages past maxKeys share.
const overflow = "\x00overflow"

// Handler limits the records passed to the handler it wraps.
type Handler struct {
	next slog.Handler
	s    *state
}

// state is shared by a Handler and those made from it by WithAttrs and
// WithGroup: a logger's children count against the same limits.
type state struct {
	burst int
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	held int // records held back since the last one passed
}

// New wraps next; burst and every as in the package comment.
func New(next slog.Handler, burst int, every time.Duration) *Handler {
	return &Handler{next: next, s: &state{burst: burst, every: every, now: time.Now, keys: map[string]*bucket{}}}
}

// Logger returns log with its handler wrapped by New with the defaults.
func Logger(log *slog.Logger) *slog.Logger {
	return slog.New(New(log.Handler(), DefaultBurst, DefaultEvery))
}

// Enabled is the wrapped handler's.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle passes r on unless its message is over its limit; a record that
// passes after some were held back carries their number as "suppressed".
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	ok, held := h.s.allow(r.Message)
	if !ok {
		return nil
	}
	if held > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", held))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs wraps the wrapped handler's, sharing the limits.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs), s: h.s}
}

// WithGroup wraps the wrapped handler's, sharing the limits.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), s: h.s}
}

// allow takes a token for key, and reports how many were held back before.
func (s *state) allow(key string) (bool, int) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.keys[key]
	if b == nil {
		if len(s.keys) >= maxKeys && !s.evictQuiet(now) {
			key = overflow
			b = s.keys[key]
		}
		if b == nil {
			b = &bucket{lim: rate.NewLimiter(rate.Every(s.every), s.burst)}
			s.keys[key] = b
		}
	}
	if !b.lim.AllowN(now, 1) {
		b.held++
		return false, 0
	}
	held := b.held
	b.held = 0
	return true, held
}

// evictQuiet forgets one message that has nothing held back and its whole
// burst back: forgetting it changes nothing.
func (s *state) evictQuiet(now time.Time) bool {
	for k, b := range s.keys {
		if k != overflow && b.held == 0 && b.lim.TokensAt(now) >= float64(s.burst) {
			delete(s.keys, k)
			return true
		}
	}
	return false
}
