package dashboard

import (
	"context"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// An instance's row: its state from its hostd when one runs, else from
// its files, and its policy in a few words.
func TestInstancesShowStateAndPolicy(t *testing.T) {
	p := home(t)
	instancetest.Running(t, p, true)
	addInstance(t, instance.Config{Name: "web", CPUs: 2, Network: instance.Network{Policy: policy.Policy{
		Mode: policy.ModeAllowlist, Allow: []string{"pypi.org", "\x1b[2Jx.example"}, Deny: []string{"t.example"}, HostPorts: []int{5432, 6379}}}})
	ctx := context.Background()
	if in := describe(ctx, instance.DefaultName); in.State != "running" || !in.Ready || in.CPUs != 2 || in.Policy != "default" {
		t.Errorf("running: %+v", in)
	}
	in := describe(ctx, "web")
	if in.State != "stopped" || in.Ready || in.Policy != "allowlist: 2 allowed, 1 denied, host ports 5432,6379" || in.Allow[1] != "␛[2Jx.example" {
		t.Errorf("stopped: %+v", in)
	}
	if in := describe(ctx, "gone"); in.State != "unknown" || !strings.Contains(in.Note, "does not exist") {
		t.Errorf("missing: %+v", in)
	}
}
