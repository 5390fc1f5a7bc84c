package agentrpc_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/internal/buildinfo"
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
	stream, err := a.RPC(t).Provisioning(ctx)
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

func TestInfo(t *testing.T) {
	marker := t.TempDir() + "/provisioned"
	a := agenttest.Start(t, "--provisioned-marker", marker)
	c := a.RPC(t)
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	host, _ := os.Hostname()
	if info.Version != buildinfo.Version || info.BootId != strings.TrimSpace(string(bootID)) || info.Hostname != host ||
		info.Kernel == "" || info.UptimeMs <= 0 || info.Arch == "" || info.Provisioned {
		t.Fatalf("info %+v", info)
	}
	os.WriteFile(marker, nil, 0o644)
	if info, _ := c.Info(context.Background()); !info.Provisioned {
		t.Fatal("provisioned marker exists but Info says not provisioned")
	}
}
