package guestagent

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/guestagent/provision"
)

// sentStream is a Provisioning stream that records what was sent.
type sentStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *agentpb.ProvisioningStatus
}

func (s *sentStream) Context() context.Context { return s.ctx }
func (s *sentStream) Send(m *agentpb.ProvisioningStatus) error {
	s.sent <- m
	return nil
}

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
	s := New(Options{Provision: &provision.Reader{Paths: paths, Run: noSystemd}, ProvisionPoll: time.Millisecond})
	st := &sentStream{ctx: t.Context(), sent: make(chan *agentpb.ProvisioningStatus, 100)}
	ended := make(chan error, 1)
	go func() { ended <- s.Provisioning(&agentpb.ProvisioningRequest{}, st) }()

	next := func() *agentpb.ProvisioningStatus {
		t.Helper()
		select {
		case m := <-st.sent:
			return m
		case err := <-ended:
			t.Fatalf("the stream ended early: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("nothing sent")
		}
		return nil
	}
	if m := next(); m.State != agentpb.ProvisioningStatus_RUNNING || m.Step != "" {
		t.Fatalf("first: %v", m)
	}
	// Looks that see no change send nothing. A look's send is done when
	// the look after it starts.
	for n := looks.Load() + 5; looks.Load() < n; {
		time.Sleep(time.Millisecond)
	}
	if len(st.sent) != 0 {
		t.Fatalf("%d statuses sent without a change", len(st.sent))
	}
	os.WriteFile(paths.StepFile, []byte("installing packages\n"), 0o644)
	if m := next(); m.State != agentpb.ProvisioningStatus_RUNNING || m.Step != "installing packages" {
		t.Fatalf("after the step: %v", m)
	}
	os.WriteFile(paths.Marker, nil, 0o644)
	if m := next(); m.State != agentpb.ProvisioningStatus_PROVISIONED {
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
	if len(st.sent) != 0 {
		t.Errorf("%d more sent after the end", len(st.sent))
	}
}

func TestProvisioningStates(t *testing.T) {
	for _, c := range []struct {
		in   provision.State
		want agentpb.ProvisioningStatus_State
	}{
		{provision.Running, agentpb.ProvisioningStatus_RUNNING},
		{provision.Provisioned, agentpb.ProvisioningStatus_PROVISIONED},
		{provision.Failed, agentpb.ProvisioningStatus_FAILED},
		{provision.FinishedUnprovisioned, agentpb.ProvisioningStatus_FINISHED_UNPROVISIONED},
	} {
		m := provisioningStatus(provision.Status{State: c.in, Step: "s", Stage: "g", LastLine: "l"})
		if m.State != c.want || m.Step != "s" || m.Stage != "g" || m.LastLine != "l" {
			t.Errorf("%v: %v", c.in, m)
		}
	}
}
