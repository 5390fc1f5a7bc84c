package guestagent

import (
	"errors"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

func TestSetTime(t *testing.T) {
	var set time.Time
	s := New(Options{SetClock: func(t time.Time) error { set = t; return nil }})
	host := time.Now().Add(-time.Hour) // the guest is an hour ahead
	resp, err := s.setTime(host.UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	if !set.Equal(time.Unix(0, host.UnixNano())) {
		t.Fatalf("clock set to %v, want %v", set, host)
	}
	if skew := time.Duration(resp.SkewNano); skew < time.Hour || skew > time.Hour+time.Minute {
		t.Fatalf("skew %v, want about an hour", skew)
	}
	var ce *refusal
	for _, bad := range []int64{0, -1} {
		if _, err := s.setTime(bad); !errors.As(err, &ce) || ce.kind != agentcall.KindInvalid {
			t.Fatalf("time %d: %v", bad, err)
		}
	}
	s = New(Options{SetClock: func(time.Time) error { return errors.New("operation not permitted") }})
	if _, err := s.setTime(1); !errors.As(err, &ce) || ce.kind != agentcall.KindFailed {
		t.Fatalf("failing clock: %v", err)
	}
}

func TestShutdownAnswersThenPowersOff(t *testing.T) {
	off := make(chan time.Time, 1)
	s := New(Options{PowerOff: func() error { off <- time.Now(); return nil }})
	answered := time.Now()
	s.shutdown()
	select {
	case at := <-off:
		if at.Before(answered) {
			t.Fatal("powered off before answering")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never powered off")
	}
}
