package cmdutil

import (
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
)

func TestWorkspaceGoneSaysHowToRecover(t *testing.T) {
	cfg := &instance.Config{Workspace: t.TempDir()}
	if msg := WorkspaceGone(cfg, "dev"); msg != "" {
		t.Fatalf("a present workspace: %q", msg)
	}
	os.RemoveAll(cfg.Workspace)
	msg := WorkspaceGone(cfg, "dev")
	if !strings.Contains(msg, cfg.Workspace) || !strings.Contains(msg, "cowork stop --name dev && cowork start --name dev") {
		t.Fatalf("a removed workspace: %q", msg)
	}
}

// A guest on a cluster shares no folder of this machine: a missing local
// workspace is no warning of its.
func TestWorkspaceGoneIsNoneOfAClusterGuest(t *testing.T) {
	cfg := &instance.Config{Workspace: t.TempDir(), Backend: instance.BackendKubeVirt}
	os.RemoveAll(cfg.Workspace)
	if msg := WorkspaceGone(cfg, "dev"); msg != "" {
		t.Fatalf("a cluster guest warned of a local folder: %q", msg)
	}
}
