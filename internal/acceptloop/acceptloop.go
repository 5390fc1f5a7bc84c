// Package acceptloop serves a listener the way a daemon must: an Accept
// that fails because the process is out of file descriptors (EMFILE),
// the system is (ENFILE), or memory or buffers ran short, is retried
// after a growing pause instead of ending the loop. A loop that returned
// on the first EMFILE would leave its socket deaf for good once a burst of
// connections had passed, which is how a guest opening 20,000 flows used
// to make hostd's agent.sock stop answering while `status` said ready.
package acceptloop

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Backoff bounds: the first retry comes after minDelay, each next one
// after twice the last, never more than maxDelay apart (net/http's and
// gRPC's servers use the same numbers).
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// Serve accepts connections on l and runs handle on each in its own
// goroutine, until l is closed (it then returns nil) or Accept fails in a
// way a retry cannot mend (it returns that error). onError, when not nil,
// hears of the first failure of a run of retries, and once more with a
// nil error and the number of failures when Accept works again; a log fed
// from it gets two lines per bad spell, not one per retry.
func Serve(l net.Listener, handle func(net.Conn), onError func(err error, failures int)) error {
	return serve(l, handle, onError, time.Sleep)
}

func serve(l net.Listener, handle func(net.Conn), onError func(error, int), sleep func(time.Duration)) error {
	var delay time.Duration
	failures := 0
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !Temporary(err) {
				return closedIsNil(err)
			}
			if failures == 0 && onError != nil {
				onError(err, 0)
			}
			failures++
			delay = min(max(2*delay, minDelay), maxDelay)
			sleep(delay)
			continue
		}
		if failures > 0 {
			if onError != nil {
				onError(nil, failures)
			}
			failures, delay = 0, 0
		}
		go handle(c)
	}
}

func closedIsNil(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Temporary reports whether an Accept error is worth retrying: the
// process or the system is short of descriptors, memory or buffers, a
// connection was aborted before it was accepted, or the error says so
// itself (net.Error's deprecated Temporary, which syscall.Errno still
// answers for EMFILE, ENFILE and EINTR).
func Temporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
