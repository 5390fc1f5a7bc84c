package vz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// errStopped is a dial given up because the VM stopped.
var errStopped = errors.New("the VM stopped")

// retry is how DialAgent waits for the guest's agent while the guest boots.
type retry struct {
	first, max time.Duration // the pause between attempts, doubling from first up to max
	attempt    time.Duration // how long one attempt may take
}

// agentRetry: the agent is up a few seconds after the kernel, so a short
// pause finds it soon; a refused vsock connection comes back at once, so
// an attempt that takes seconds is stuck, not slow.
var agentRetry = retry{first: 20 * time.Millisecond, max: 500 * time.Millisecond, attempt: 5 * time.Second}

// dialRetry calls dial until it returns a connection, ctx is done, or stop
// is closed (the VM is gone), pausing between attempts.
func dialRetry(ctx context.Context, stop <-chan struct{}, r retry, dial func() (net.Conn, error)) (net.Conn, error) {
	pause := r.first
	for {
		conn, err := dialOnce(ctx, stop, r.attempt, dial)
		if err == nil {
			return conn, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-stop:
			t.Stop()
			return nil, errStopped
		case <-t.C:
		}
		pause = min(2*pause, r.max)
	}
}

// dialOnce bounds one attempt by limit, ctx and stop. vz's Connect blocks
// until Virtualization.framework calls its completion handler, which
// nothing promises to do soon; an attempt given up on is left to finish in
// the background, and a connection it makes late is closed.
func dialOnce(ctx context.Context, stop <-chan struct{}, limit time.Duration, dial func() (net.Conn, error)) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := dial()
		done <- result{conn, err}
	}()
	t := time.NewTimer(limit)
	defer t.Stop()
	var err error
	select {
	case r := <-done:
		return r.conn, r.err
	case <-t.C:
		err = fmt.Errorf("no answer in %s", limit)
	case <-ctx.Done():
		err = ctx.Err()
	case <-stop:
		err = errStopped
	}
	go func() {
		if r := <-done; r.conn != nil {
			r.conn.Close()
		}
	}()
	return nil, err
}
