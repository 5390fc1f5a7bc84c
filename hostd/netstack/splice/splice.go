// Package splice joins two connections, what one reads going to the
// other both ways, for every place hostd carries a byte stream through:
// a guest's TCP flow and its CONNECT tunnel (the flow's audit line needs
// the byte counts and the guest's first bytes), a published port (the
// host into the guest), and agent.sock (the host's client to the agent).
// One copy loop serves them all, so that the buffers a quiet flow holds,
// the half-close a protocol relies on and the end of a broken connection
// are the same everywhere.
package splice

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// A direction's buffers: each starts with a small one, which is all a
// quiet connection ever holds (a guest may keep a thousand flows open),
// and moves to a large one the first time a read fills it, so that a bulk
// transfer costs few reads from gVisor and writes to the host.
const (
	smallBuffer = 16 << 10
	largeBuffer = 256 << 10
)

// Options are what a caller may change.
type Options struct {
	// Tap, when set, sees each chunk read from a, before it is written to
	// b, on a's copying goroutine (the flow's name is sniffed from it).
	// It must not keep the slice.
	Tap func([]byte)
	// BeforeB, when set, is called once, on b's copying goroutine, when
	// b's first bytes have been read and before they are written to a:
	// a guest's flow holds the world's answer there until it knows who
	// asked (netstack's owners.holdAnswer).
	BeforeB func()
	// CloseOnEnd closes both connections as soon as either direction
	// ends, even cleanly. Without it, a direction that ends cleanly (its
	// source said EOF) half-closes its destination (CloseWrite, or Close
	// when it has none) and the other direction goes on: an HTTP client
	// may send its request, close its side, and still read the answer.
	// agent.sock sets it: its other end is the guest, which must not hold
	// a host connection open after the host's client left.
	CloseOnEnd bool
}

// Result is what went through, and how it ended.
type Result struct {
	AToB, BToA int64 // bytes written to b (read from a), and to a
	// Err is the first error other than a clean end (EOF) either way:
	// a reset, a write to a closed peer, or a connection closed from
	// outside (an idle timeout). After it both connections were closed at
	// once, so that the other direction could not hang on.
	Err error
}

// Join copies a to b and b to a until both directions end, then closes
// both connections and returns. A direction ends cleanly when its source
// says EOF; any other error ends both at once (see Result.Err). Closing
// either connection from outside (the idle reaper does) ends Join.
func Join(a, b net.Conn, opt Options) Result {
	var (
		res     Result
		errOnce sync.Once
		closed  sync.Once
		// ours: Join closed a connection itself, so the errors that follow
		// (reading a closed connection) are its own doing, not news.
		ours atomic.Bool
	)
	closeBoth := func() {
		closed.Do(func() {
			ours.Store(true)
			a.Close()
			b.Close()
		})
	}
	end := func(dst net.Conn, err error) {
		switch {
		case err != nil:
			if !ours.Load() {
				errOnce.Do(func() { res.Err = err })
			}
			closeBoth()
		case opt.CloseOnEnd:
			closeBoth()
		default:
			// Half-close dst when it can, and else close it: the peer
			// must hear of the end either way.
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			} else {
				ours.Store(true)
				_ = dst.Close()
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		k, err := copyStream(b, a, opt.Tap, nil)
		res.AToB = k
		end(b, err)
	}()
	k, err := copyStream(a, b, nil, opt.BeforeB)
	res.BToA = k
	end(a, err)
	<-done
	closeBoth()
	return res
}

// copyStream copies src to dst until src ends (nil) or either side
// fails, and returns the bytes written. tap sees each chunk; before, if
// set, is called once ahead of the first.
func copyStream(dst io.Writer, src io.Reader, tap func([]byte), before func()) (int64, error) {
	var written int64
	buf := make([]byte, smallBuffer)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if before != nil {
				before()
				before = nil
			}
			if tap != nil {
				tap(buf[:k])
			}
			w, werr := dst.Write(buf[:k])
			written += int64(w)
			if werr != nil {
				return written, werr
			}
			if k == len(buf) && len(buf) < largeBuffer {
				buf = make([]byte, largeBuffer)
			}
		}
		if errors.Is(err, io.EOF) {
			return written, nil
		}
		if err != nil {
			return written, err
		}
	}
}
