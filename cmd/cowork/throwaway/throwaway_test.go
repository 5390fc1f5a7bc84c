package throwaway

import (
	"sync/atomic"
	"testing"
	"time"
)

// A short run's refill starts when it ends, not beside it; a long run's
// starts while it goes on; either way once.
func TestRefillStartsOnceAfterAShortRunOrDuringALongOne(t *testing.T) {
	var refills atomic.Int32
	refill := func() { refills.Add(1) }

	var during int32 = -1
	refillAround(time.Hour, refill, func() error {
		during = refills.Load()
		return nil
	})
	if during != 0 || refills.Load() != 1 {
		t.Fatalf("short run: %d refills while it ran, %d in all; want 0 and 1", during, refills.Load())
	}

	refills.Store(0)
	refillAround(10*time.Millisecond, refill, func() error {
		deadline := time.Now().Add(5 * time.Second)
		for refills.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		during = refills.Load()
		return nil
	})
	if during != 1 || refills.Load() != 1 {
		t.Fatalf("long run: %d refills while it ran, %d in all; want 1 and 1", during, refills.Load())
	}
}
