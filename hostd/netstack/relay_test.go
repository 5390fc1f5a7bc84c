//go:build linux

package netstack

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"
)

// closedAfterEOF is a request body as the server hands it over: once read
// to its end, the server may close it, and a read then fails.
type closedAfterEOF struct {
	data   string
	closed bool
}

func (b *closedAfterEOF) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("http: invalid Read on closed Body")
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	if b.data == "" {
		b.closed = true
		return n, io.EOF
	}
	return n, nil
}

func (b *closedAfterEOF) Close() error { return nil }

// The transport reads once more past a body's end; the relay's body says
// EOF again rather than asking the server, which may have closed it (the
// race that cut answers short now and then).
func TestRelayRequestBodyKeepsItsEnd(t *testing.T) {
	var n atomic.Int64
	b := &requestBody{ReadCloser: &closedAfterEOF{data: "{}"}, n: &n}
	p := make([]byte, 10)
	if k, err := b.Read(p); k != 2 || err != io.EOF {
		t.Fatalf("first read: %d %v", k, err)
	}
	if k, err := b.Read(p); k != 0 || err != io.EOF {
		t.Fatalf("a read past the end: %d %v, want EOF", k, err)
	}
	if n.Load() != 2 {
		t.Fatalf("counted %d bytes", n.Load())
	}
}
