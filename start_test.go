package cowork

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// newInstance makes an instance with a config in a fresh COWORK_HOME.
func newInstance(t *testing.T) instance.Paths {
	t.Helper()
	p, _ := instancetest.New(t, instance.Config{})
	return p
}

// waitForFile waits until path exists and returns its contents.
func waitForFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A start interrupted before its hostd serves the control socket (here a
// stand-in that never does, as a real one still taking its lock would not)
// must not leave that hostd running on its own: it runs in its own session,
// out of reach of the terminal's Ctrl-C, so Start has to stop it.
func TestInterruptedStartStopsTheHostdItLaunched(t *testing.T) {
	newInstance(t)
	dir := t.TempDir()
	t.Setenv("FAKE_HOSTD_DIR", dir)
	exe := filepath.Join(dir, "fake-cowork")
	script := `#!/bin/sh
trap 'echo stopped > "$FAKE_HOSTD_DIR/signalled"; exit 0' TERM
echo $$ > "$FAKE_HOSTD_DIR/pid"
while :; do sleep 0.05; done
`
	if err := os.WriteFile(exe, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Start(ctx, exe, instance.DefaultName, nil) }()
	pid, _ := strconv.Atoi(waitForFile(t, filepath.Join(dir, "pid")))
	cancel()

	var err error
	select {
	case err = <-done:
	case <-time.After(abandonTimeout + 10*time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("Start did not return after its context ended")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "signalled")); strings.TrimSpace(string(b)) != "stopped" {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("the launched hostd was not sent SIGTERM")
	}
	// Start waited for it and reaped it, so the pid names no process.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the launched hostd (pid %d) still exists after Start returned: %v", pid, err)
	}
}

// A ready instance is "already running", even for a start whose time ran
// out before it asked: nothing was abandoned, so nothing is reported so.
func TestStartOutOfTimeFindsAReadyInstanceRunning(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Start(ctx, "/nonexistent/cowork", instance.DefaultName, nil)
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("start = %v, want ErrAlreadyRunning", err)
	}
	if ab := new(*AbandonedError); errors.As(err, ab) {
		t.Fatalf("start reported an abandoned start: %v", err)
	}
	if s := h.Stops(); len(s) != 0 {
		t.Fatalf("start stopped a ready instance: %v", s)
	}
}

// A start that finds a standby hostd (a warm pool clone's, its guest
// loaded and paused) wakes it and follows it to ready; one that finds a
// ready instance wakes nothing.
func TestStartWakesAStandby(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.StandingBy(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seen []Phase
	if err := Start(ctx, "/nonexistent/cowork", instance.DefaultName, func(ev *Event) { seen = append(seen, ev.Phase) }); err != nil {
		t.Fatalf("start of a standby: %v", err)
	}
	if h.Wakes() != 1 || len(seen) == 0 || seen[len(seen)-1] != PhaseReady {
		t.Errorf("woken %d times, events %v; want once, then ready", h.Wakes(), seen)
	}
	if err := Start(ctx, "/nonexistent/cowork", instance.DefaultName, nil); !errors.Is(err, ErrAlreadyRunning) || h.Wakes() != 1 {
		t.Errorf("a second start: %v, woken %d times", err, h.Wakes())
	}
}

// A start that finds a standby still loading (its status says starting)
// wakes it too: it runs the guest once loaded.
func TestStartWakesAStandbyStillLoading(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Loading(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Start(ctx, "/nonexistent/cowork", instance.DefaultName, nil); err != nil || h.Wakes() != 1 {
		t.Fatalf("start of a loading standby: %v, woken %d times", err, h.Wakes())
	}
}
