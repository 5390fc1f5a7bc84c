package guestagent

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/guestagent/provision"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// Provisioning sends the status at once, again only when it changed, and
// ends after the first that is not running.
func TestProvisioningStreamsChangesUntilDone(t *testing.T) {
	dir := t.TempDir()
	paths := provision.Paths{
		Marker:   filepath.Join(dir, "provisioned"),
		StepFile: filepath.Join(dir, "step"),
		Unit:     "cowork-provision.service",
	}
	var looks atomic.Int32 // each look runs systemctl, then journalctl
	noSystemd := func(_ context.Context, argv ...string) ([]byte, error) {
		if argv[0] == "systemctl" {
			looks.Add(1)
		}
		return nil, os.ErrNotExist
	}
	s := New(Options{Provision: &provision.Reader{Paths: paths, Run: noSystemd}, ProvisionPoll: time.Millisecond, ProvisionHeartbeat: time.Hour})
	sent := make(chan *agentcall.ProvisioningStatus, 100)
	ended := make(chan error, 1)
	go func() {
		ended <- s.provisioningCall(t.Context(), func(m *agentcall.ProvisioningStatus) error { sent <- m; return nil })
	}()

	next := func() *agentcall.ProvisioningStatus {
		t.Helper()
		select {
		case m := <-sent:
			return m
		case err := <-ended:
			t.Fatalf("the stream ended early: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("nothing sent")
		}
		return nil
	}
	if m := next(); m.State != agentcall.StateRunning || m.Step != "" {
		t.Fatalf("first: %v", m)
	}
	// Looks that see no change send nothing. A look's send is done when
	// the look after it starts.
	for n := looks.Load() + 5; looks.Load() < n; {
		time.Sleep(time.Millisecond)
	}
	if len(sent) != 0 {
		t.Fatalf("%d statuses sent without a change", len(sent))
	}
	os.WriteFile(paths.StepFile, []byte("installing packages\n"), 0o644)
	if m := next(); m.State != agentcall.StateRunning || m.Step != "installing packages" {
		t.Fatalf("after the step: %v", m)
	}
	os.WriteFile(paths.Marker, nil, 0o644)
	if m := next(); m.State != agentcall.StateProvisioned {
		t.Fatalf("after the marker: %v", m)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("ended with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the stream did not end once provisioned")
	}
	if len(sent) != 0 {
		t.Errorf("%d more sent after the end", len(sent))
	}
}

func TestProvisioningStates(t *testing.T) {
	for _, c := range []struct {
		in   provision.State
		want agentcall.State
	}{
		{provision.Running, agentcall.StateRunning},
		{provision.Provisioned, agentcall.StateProvisioned},
		{provision.Failed, agentcall.StateFailed},
		{provision.FinishedUnprovisioned, agentcall.StateFinishedUnprovisioned},
	} {
		m := provisioningStatus(provision.Status{State: c.in, Step: "s", Stage: "g", LastLine: "l"})
		if m.State != c.want || m.Step != "s" || m.Stage != "g" || m.LastLine != "l" {
			t.Errorf("%v: %v", c.in, m)
		}
	}
}

// A status that does not change is sent again every heartbeat, so that
// the host can tell a quiet guest from a dead channel.
func TestProvisioningRepeatsAnUnchangedStatus(t *testing.T) {
	dir := t.TempDir()
	paths := provision.Paths{Marker: filepath.Join(dir, "provisioned"), StepFile: filepath.Join(dir, "step"), Unit: "cowork-provision.service"}
	noSystemd := func(context.Context, ...string) ([]byte, error) { return nil, os.ErrNotExist }
	s := New(Options{Provision: &provision.Reader{Paths: paths, Run: noSystemd}, ProvisionPoll: time.Millisecond, ProvisionHeartbeat: time.Nanosecond})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a heartbeat missing fails, not hangs
	defer cancel()
	n := 0
	err := s.provisioningCall(ctx, func(m *agentcall.ProvisioningStatus) error {
		if m.State != agentcall.StateRunning {
			t.Errorf("status %+v", m)
		}
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if n != 3 || err == nil {
		t.Errorf("%d statuses sent, then %v; want 3, then the end of the context", n, err)
	}
}
