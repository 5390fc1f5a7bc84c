package listener

import (
	"errors"
	"io"
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
