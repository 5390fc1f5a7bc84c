package agentclient_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
)

// The real agent, on a machine that is no cloud-init guest: it reports
// provisioning running until its marker exists, then provisioned, and
// ends the stream.
func TestProvisioning(t *testing.T) {
	if _, err := os.Stat("/var/lib/cloud/instance/boot-finished"); err == nil {
		t.Skip("this machine is a cloud-init guest itself")
	}
	marker := t.TempDir() + "/provisioned"
	a := agenttest.Start(t, "--provisioned-marker", marker)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := a.Client(t).Provisioning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.State != agentpb.ProvisioningStatus_RUNNING {
		t.Fatalf("first status %v, %v", first, err)
	}
	os.WriteFile(marker, nil, 0o644)
	for {
		st, err := stream.Recv()
		if err != nil {
			t.Fatalf("the stream ended before the guest was provisioned: %v", err)
		}
		if st.State == agentpb.ProvisioningStatus_PROVISIONED {
			break
		}
	}
	if st, err := stream.Recv(); err == nil {
		t.Errorf("the stream went on after provisioned: %v", st)
	}
}
