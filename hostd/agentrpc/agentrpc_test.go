package agentrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/internal/agentcall"
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
	if err != nil || first.State != agentcall.StateRunning {
		t.Fatalf("first status %v, %v", first, err)
	}
	os.WriteFile(marker, nil, 0o644)
	for {
		st, err := stream.Recv()
		if err != nil {
			t.Fatalf("the stream ended before the guest was provisioned: %v", err)
		}
		if st.State == agentcall.StateProvisioned {
			break
		}
	}
	if st, err := stream.Recv(); err != io.EOF {
		t.Errorf("the stream went on after provisioned: %v, %v", st, err)
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
	if info.Version != buildinfo.Version || info.BootID != strings.TrimSpace(string(bootID)) || info.Hostname != host ||
		info.Kernel == "" || info.UptimeMs <= 0 || info.Arch == "" || info.Provisioned {
		t.Fatalf("info %+v", info)
	}
	os.WriteFile(marker, nil, 0o644)
	if info, _ := c.Info(context.Background()); !info.Provisioned {
		t.Fatal("provisioned marker exists but Info says not provisioned")
	}
}

// The real agent answers set_time with its refusal when no time is
// given, and an unknown method as unimplemented.
func TestRefusals(t *testing.T) {
	a := agenttest.Start(t)
	_, err := a.RPC(t).SetTime(context.Background(), time.Unix(0, 0))
	var re *agentrpc.RefusedError
	if !errors.As(err, &re) || re.Kind != agentcall.KindInvalid || !strings.Contains(err.Error(), "no time given") {
		t.Errorf("set_time without a time: %v", err)
	}
	err = agentrpc.CallForTest(context.Background(), agentclient.UnixDialer(a.Socket), "format_disk")
	if !agentrpc.IsUnimplemented(err) || !strings.Contains(err.Error(), `unknown method "format_disk"`) {
		t.Errorf("an unknown method: %v", err)
	}
}

// A channel of a kind the agent does not serve (here an older hostd's
// gRPC) is closed unanswered, and the agent goes on serving.
func TestAgentClosesOtherChannels(t *testing.T) {
	a := agenttest.Start(t)
	c, err := net.Dial("unix", a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	// Closed with bytes unread, the channel may be reset rather than ended.
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the agent answered %q, %v; want the channel closed", b, err)
	}
	if _, err := a.RPC(t).Info(context.Background()); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// The real agent: a share release of a directory nothing is mounted at is
// done already; a path or tag that is none is refused before anything.
func TestShareCalls(t *testing.T) {
	a := agenttest.Start(t)
	c := a.RPC(t)
	r, err := c.ShareRelease(context.Background(), t.TempDir(), false)
	if err != nil || !r.Unmounted || !r.NotMounted || len(r.Users) != 0 {
		t.Fatalf("release of no mount: %+v, %v", r, err)
	}
	var re *agentrpc.RefusedError
	if _, err := c.ShareRelease(context.Background(), "workspace/../x", true); !errors.As(err, &re) || re.Kind != agentcall.KindInvalid {
		t.Errorf("release of a relative path: %v", err)
	}
	if err := c.ShareMount(context.Background(), "a,uid=0", "/workspace", false); !errors.As(err, &re) || re.Kind != agentcall.KindInvalid || !strings.Contains(err.Error(), "comma") {
		t.Errorf("mount of a tag with options in it: %v", err)
	}
}
