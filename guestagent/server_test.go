package guestagent

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coworkhq/cowork/guestagent/agentpb"
)

func TestSetTime(t *testing.T) {
	var set time.Time
	s := New(Options{SetClock: func(t time.Time) error { set = t; return nil }})
	host := time.Now().Add(-time.Hour) // the guest is an hour ahead
	resp, err := s.SetTime(context.Background(), &agentpb.SetTimeRequest{UnixNano: host.UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if !set.Equal(time.Unix(0, host.UnixNano())) {
		t.Fatalf("clock set to %v, want %v", set, host)
	}
	if skew := time.Duration(resp.SkewNano); skew < time.Hour || skew > time.Hour+time.Minute {
		t.Fatalf("skew %v, want about an hour", skew)
	}
	if _, err := s.SetTime(context.Background(), &agentpb.SetTimeRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no time: %v", err)
	}
	s = New(Options{SetClock: func(time.Time) error { return errors.New("operation not permitted") }})
	if _, err := s.SetTime(context.Background(), &agentpb.SetTimeRequest{UnixNano: 1}); status.Code(err) != codes.Internal {
		t.Fatalf("failing clock: %v", err)
	}
}

func TestShutdownAnswersThenPowersOff(t *testing.T) {
	off := make(chan time.Time, 1)
	s := New(Options{PowerOff: func() error { off <- time.Now(); return nil }})
	answered := time.Now()
	if _, err := s.Shutdown(context.Background(), &agentpb.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-off:
		if at.Before(answered) {
			t.Fatal("powered off before answering")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never powered off")
	}
}
