package cowork

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
)

// heldCall is a control call that lasts as long as its stream: a relay
// session, learn mode. hostd ends what it holds when the stream closes,
// however this process ends; Close here ends it at once.
type heldCall struct {
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // why the stream ended, once done is closed
	once    sync.Once
	closing atomic.Bool // Close has begun: a cancelled stream is no error
}

// hold opens the call with open, waits for hostd's first answer (ctx
// bounds that wait, not the call), then follows the stream until it ends.
func hold[T any](ctx context.Context, h *heldCall, open func(life context.Context) (*controlwire.Stream[T], error)) (*T, error) {
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := open(life)
	if err != nil {
		cancel()
		return nil, err
	}
	stop := context.AfterFunc(ctx, cancel)
	first, err := stream.Recv()
	if !stop() {
		cancel()
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				// Close cancels the stream right after hostd ended it: a
				// cancel seen before hostd's end is that plain close too.
				if !errors.Is(err, io.EOF) && !(h.closing.Load() && errors.Is(err, context.Canceled)) {
					h.err = err
				}
				close(h.done)
				return
			}
		}
	}()
	return first, nil
}

// Done is closed when the call ended: Close, its ceiling, or hostd
// exiting; Err then says why.
func (h *heldCall) Done() <-chan struct{} { return h.done }

// Err is nil while the call lasts or after Close; else why it ended
// (ErrSessionExpired at its ceiling).
func (h *heldCall) Err() error {
	select {
	case <-h.done:
		return h.err
	default:
		return nil
	}
}

// end runs before, ends the stream and waits for its end, then runs
// after; only the first end does anything.
func (h *heldCall) end(before, after func()) {
	h.once.Do(func() {
		h.closing.Store(true)
		if before != nil {
			before()
		}
		h.cancel()
		<-h.done
		if after != nil {
			after()
		}
	})
}

// ttlSeconds is ttl in whole seconds for hostd, rounded up: hostd reads 0
// as the ceiling, so a ttl under a second must not become 0. Past the
// ceiling it is one second past it, which hostd caps; not above 0, it is
// 0: the ceiling.
func ttlSeconds(ttl, ceiling time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return int64(min(ttl, ceiling+time.Second)+time.Second-1) / int64(time.Second)
}
