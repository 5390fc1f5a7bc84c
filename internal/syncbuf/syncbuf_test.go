package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers and a reader at once see every write whole; Max drops what
// comes past it.
func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != 800 {
		t.Errorf("%d lines, want 800", got)
	}
	small := Buffer{Max: 10}
	for range 5 {
		if k, err := small.Write([]byte("12345678")); k != 8 || err != nil {
			t.Fatalf("write: %d, %v", k, err)
		}
	}
	if got := len(small.String()); got != 16 {
		t.Errorf("kept %d bytes past a Max of 10; want 16 (writes stop once it is over)", got)
	}
}
