// Package syncbuf is a byte buffer that one goroutine may write while
// another reads it: a command's output, a logger's or a console's, that a
// test reads as the code under test writes.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer behind a mutex. Its zero value is empty and
// unbounded.
type Buffer struct {
	// Max, when above zero, bounds what it keeps: writes past it are
	// dropped (and reported written), so that a chatty writer cannot
	// grow a test's memory without end.
	Max int

	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Max > 0 && b.b.Len() > b.Max {
		return len(p), nil
	}
	return b.b.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
