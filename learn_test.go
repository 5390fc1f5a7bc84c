package cowork

import (
	"context"
	"testing"
	"time"
)

// hostd reads 0 seconds as the ceiling: a ttl under a second must ask for
// one, not for 8 hours.
func TestLearnSecondsRoundsUp(t *testing.T) {
	for _, c := range []struct {
		ttl  time.Duration
		want int64
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{500 * time.Millisecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{30 * time.Minute, 1800},
		{MaxLearnTTL, 8 * 3600},
		{1 << 62, 8*3600 + 1}, // past the ceiling: hostd caps it
	} {
		if got := ttlSeconds(c.ttl, MaxLearnTTL); got != c.want {
			t.Errorf("ttlSeconds(%s) = %d, want %d", c.ttl, got, c.want)
		}
	}
}

// A session's ttl is rounded the same way: under a second it asks for
// one, not for the ceiling; not above 0 it asks for the ceiling.
func TestSessionSecondsRoundUp(t *testing.T) {
	for ttl, want := range map[time.Duration]int64{-time.Second: 0, 0: 0, 500 * time.Millisecond: 1, MaxSessionTTL: 8 * 3600} {
		if got := ttlSeconds(ttl, MaxSessionTTL); got != want {
			t.Errorf("ttlSeconds(%s, MaxSessionTTL) = %d, want %d", ttl, got, want)
		}
	}
}

// A negative ttl is an error, not the ceiling.
func TestLearnRefusesANegativeTTL(t *testing.T) {
	c, _ := newFakeClient(t)
	if l, err := c.Learn(context.Background(), -time.Second); err == nil {
		l.Close()
		t.Fatal("learn mode for -1s began")
	}
}
