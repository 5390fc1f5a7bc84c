package mountcmd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// mount runs `cowork mount args...` and returns its stdout.
func mount(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, out, _ := iostreams.Test()
	name := instance.DefaultName
	err := cmdtest.Prepare(NewCmdMount(ios, &name, nil), ios, args...).Execute()
	return out.String(), err
}

func TestMountLs(t *testing.T) {
	data := t.TempDir()
	_, cfg := instancetest.New(t, instance.Config{Mounts: []instance.Mount{{Host: data, Guest: "/data", ReadOnly: true}}})
	out, err := mount(t, "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], "HOST") ||
		strings.Join(strings.Fields(lines[1]), " ") != cfg.Workspace+" /workspace rw" ||
		strings.Join(strings.Fields(lines[2]), " ") != data+" /data ro" {
		t.Fatalf("mount ls: %q %v", out, err)
	}
	out, err = mount(t, "ls", "--json")
	var got []instance.Mount
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[1] != cfg.Mounts[0] || got[0].Guest != "/workspace" {
		t.Fatalf("mount ls --json: %q %v", out, err)
	}
	if _, err := mount(t, "ls", "extra"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("mount ls extra: %v", err)
	}
	if _, err := mount(t, "add"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("mount add: %v", err)
	}
}
