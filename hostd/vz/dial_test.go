package vz

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var quick = retry{first: time.Millisecond, max: 2 * time.Millisecond, attempt: 20 * time.Millisecond}

func TestDialRetryUntilTheAgentAnswers(t *testing.T) {
	var calls atomic.Int32
	host, guest := net.Pipe()
	defer guest.Close()
	conn, err := dialRetry(context.Background(), nil, quick, func() (net.Conn, error) {
		if calls.Add(1) < 4 {
			return nil, syscall.ECONNRESET // the agent is not listening yet
		}
		return host, nil
	})
	if err != nil || conn != host {
		t.Fatalf("got %v, %v; want the connection of the fourth attempt", conn, err)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("%d attempts, want 4", n)
	}
}

// An attempt that hangs is given up on, the next one is made, and the
// connection the stuck one makes late is closed rather than leaked.
func TestDialRetryAbandonsAStuckAttempt(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	late, lateGuest := net.Pipe()
	host, guest := net.Pipe()
	defer guest.Close()
	conn, err := dialRetry(context.Background(), nil, quick, func() (net.Conn, error) {
		if calls.Add(1) == 1 {
			<-release
			return late, nil
		}
		return host, nil
	})
	if err != nil || conn != host {
		t.Fatalf("got %v, %v; want the second attempt's connection", conn, err)
	}
	close(release)
	if _, err := lateGuest.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("reading the late connection's peer: %v, want EOF (closed)", err)
	}
}

func TestDialRetryEndsWithCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	_, err := dialRetry(ctx, nil, quick, func() (net.Conn, error) {
		if calls.Add(1) == 3 {
			cancel()
		}
		return nil, syscall.ECONNRESET
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

// A dial stuck when ctx ends does not hold the caller (vz's Connect may
// never call back).
func TestDialRetryCtxCutsAStuckAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stuck := retry{first: time.Millisecond, max: time.Millisecond, attempt: time.Hour}
	release := make(chan struct{})
	defer close(release)
	_, err := dialRetry(ctx, nil, stuck, func() (net.Conn, error) {
		cancel()
		<-release
		return nil, syscall.ECONNRESET
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestDialRetryEndsWhenTheVMStops(t *testing.T) {
	stop := make(chan struct{})
	var calls atomic.Int32
	_, err := dialRetry(context.Background(), stop, quick, func() (net.Conn, error) {
		if calls.Add(1) == 2 {
			close(stop)
		}
		return nil, syscall.ECONNRESET
	})
	if !errors.Is(err, errStopped) {
		t.Fatalf("err %v, want errStopped", err)
	}
}
