package machine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// PowerOffWithin asks through the agent first, falls back to the power
// button, and reports nil only when the guest went down by itself.
func TestPowerOffWithin(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	never := make(chan struct{})
	broken := errors.New("agent gone")
	tests := []struct {
		name      string
		powerOff  func(context.Context) error
		buttonErr error
		done      <-chan struct{}
		timeout   time.Duration
		want      string // "" for nil; else a part of the error
		agent     int    // calls expected
		button    int
	}{
		{"the agent powers it off", func(context.Context) error { return nil }, nil, closed, time.Hour, "", 1, 0},
		{"the agent fails, the button works", func(context.Context) error { return broken }, nil, closed, time.Hour, "", 1, 1},
		{"no agent: the button", nil, nil, closed, time.Hour, "", 0, 1},
		{"neither can ask", func(context.Context) error { return broken }, errors.New("no button"), closed, time.Hour, "could not ask the guest to power off: agent gone; the power button: no button", 1, 1},
		{"asked but never off", func(context.Context) error { return nil }, nil, never, 10 * time.Millisecond, "did not power off within 10ms", 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var agent, button int
			c := Config{}
			if tc.powerOff != nil {
				c.PowerOff = func(ctx context.Context) error { agent++; return tc.powerOff(ctx) }
			}
			err := c.PowerOffWithin(context.Background(), tc.timeout, func() error { button++; return tc.buttonErr }, tc.done)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if agent != tc.agent || button != tc.button {
				t.Fatalf("asked the agent %d and the button %d times, want %d and %d", agent, button, tc.agent, tc.button)
			}
		})
	}
}

// A stop whose caller gives up does not wait out the timeout.
func TestPowerOffWithinEndsWithCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := Config{PowerOff: func(context.Context) error { cancel(); return nil }}
	err := c.PowerOffWithin(ctx, time.Hour, func() error { return nil }, make(chan struct{}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
