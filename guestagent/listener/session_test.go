package listener

import (
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// countingPort counts the reads and writes that reach the port.
type countingPort struct{ reads, writes int }

func (p *countingPort) Read(b []byte) (int, error)  { p.reads++; return len(b), nil }
func (p *countingPort) Write(b []byte) (int, error) { p.writes++; return len(b), nil }
func (p *countingPort) SetDeadline(time.Time) error { return nil }

// A closed session neither reads nor writes the port any more: the port
// outlives it and the next session's bytes are not this one's.
func TestClosedSessionLeavesThePortAlone(t *testing.T) {
	port := &countingPort{}
	c := &sessionConn{port: port, pending: []byte("hi"), done: make(chan struct{})}
	buf := make([]byte, 8)
	if n, err := c.Read(buf); n != 2 || err != nil {
		t.Fatalf("first read = %d, %v; want the 2 pending bytes", n, err)
	}
	if _, err := c.Read(buf); err != nil || port.reads != 1 {
		t.Fatalf("an open session's read: %v after %d port reads; want it read from the port", err, port.reads)
	}
	c.Close()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read after Close = %d, %v; want 0, EOF", n, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after Close: %v; want io.ErrClosedPipe", err)
	}
	if port.reads != 1 || port.writes != 0 {
		t.Errorf("the closed session reached the port: %d reads, %d writes", port.reads, port.writes)
	}
}

// blockingPort's reads wait for a deadline in the past, as a serial
// port's do when no bytes come; it records the deadlines set.
type blockingPort struct {
	mu        sync.Mutex
	deadlines []time.Time
	cut       chan struct{} // closed by a deadline in the past
}

func (p *blockingPort) Read([]byte) (int, error) {
	<-p.cut
	return 0, os.ErrDeadlineExceeded
}
func (p *blockingPort) Write(b []byte) (int, error) { return len(b), nil }
func (p *blockingPort) SetDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deadlines = append(p.deadlines, t)
	if !t.IsZero() && !t.After(time.Now()) {
		select {
		case <-p.cut:
		default:
			close(p.cut)
		}
	}
	return nil
}

func (p *blockingPort) set() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.deadlines)
}

// Closing a session cuts its read under way with a deadline, and lifts
// the deadline as soon as that read has returned, not some time later:
// the next session (a resumed guest's new host) reads the port at once.
// A session closed with nothing under way leaves the port alone.
func TestClosedSessionFreesThePortOnceItsReadReturns(t *testing.T) {
	port := &blockingPort{cut: make(chan struct{})}
	c := &sessionConn{port: port, done: make(chan struct{})}
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		read <- err
	}()
	for !func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.active == 1 }() {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	if err := <-read; err != io.EOF {
		t.Errorf("the cut read: %v, want EOF", err)
	}
	set := port.set()
	if len(set) != 2 || set[0].IsZero() || !set[1].IsZero() {
		t.Errorf("deadlines set %v, want one in the past, then none", set)
	}

	idle := &blockingPort{cut: make(chan struct{})}
	c = &sessionConn{port: idle, done: make(chan struct{})}
	c.Close()
	if set := idle.set(); len(set) != 0 {
		t.Errorf("closing an idle session set deadlines %v", set)
	}
}
