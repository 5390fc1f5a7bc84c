package cowork

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/units"
)

func openNew(t *testing.T, cfg instance.Config) *Instance {
	t.Helper()
	instancetest.New(t, cfg)
	inst, err := Open(cmpName(cfg.Name))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func cmpName(n string) string {
	if n == "" {
		return instance.DefaultName
	}
	return n
}

func TestOpenMissing(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	var nf *instance.NotFoundError
	if _, err := Open("nope"); !errors.As(err, &nf) {
		t.Fatalf("Open of no instance: %v", err)
	}
}

// Stop of a stopped instance is no error, and cleans up after a daemon
// that died; of a running one, it asks the daemon and waits it out.
func TestStop(t *testing.T) {
	inst := openNew(t, instance.Config{})
	os.WriteFile(inst.Paths.PidFile(), []byte("4242\n"), 0o600)
	r, err := inst.Stop(context.Background(), false, time.Second)
	if err != nil || r.WasRunning || r.DeadPid != 4242 {
		t.Fatalf("a dead daemon: %+v %v", r, err)
	}
	if _, err := os.Stat(inst.Paths.PidFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead daemon's pid file is left")
	}

	h := instancetest.Running(t, inst.Paths, true)
	r, err = inst.Stop(context.Background(), true, 7*time.Second)
	if err != nil || !r.WasRunning || inst.Running() {
		t.Fatalf("a running instance: %+v %v (running %v)", r, err, inst.Running())
	}
	if s := h.Stops(); len(s) != 1 || !s[0].Force || s[0].TimeoutMS != 7000 {
		t.Errorf("the daemon was asked %v", s)
	}
}

// Delete stops the instance, removes its folder and keeps the workspace;
// one whose workspace lies inside its folder is refused untouched.
func TestDelete(t *testing.T) {
	inst := openNew(t, instance.Config{})
	h := instancetest.Running(t, inst.Paths, true)
	if r, err := inst.Delete(context.Background(), false); err != nil || !r.WasRunning {
		t.Fatalf("%+v %v", r, err)
	}
	if len(h.Stops()) != 1 {
		t.Errorf("deleted without stopping: %v", h.Stops())
	}
	if _, err := os.Stat(inst.Paths.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder is left: %v", err)
	}
	if _, err := os.Stat(inst.Config.Workspace); err != nil {
		t.Errorf("the workspace went: %v", err)
	}

	p, cfg := instancetest.New(t, instance.Config{Name: "box"})
	inside := filepath.Join(p.Dir(), "ws")
	cfg.Workspace = inside
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(inside, 0o700)
	os.WriteFile(filepath.Join(inside, "work.txt"), []byte("mine"), 0o600)
	box, err := Open("box")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := box.Delete(context.Background(), true); err == nil || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Fatalf("a workspace inside the folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(inside, "work.txt")); err != nil {
		t.Errorf("the workspace lost a file: %v", err)
	}
}

func TestResize(t *testing.T) {
	inst := openNew(t, instance.Config{Disk: 1 << 20})
	os.WriteFile(inst.Paths.Disk(), make([]byte, 1<<20), 0o600)
	if _, err := inst.Resize(512 << 10); !errors.As(err, new(*ShrinkError)) {
		t.Fatalf("a shrink: %v", err)
	}
	if grew, err := inst.Resize(1 << 20); grew || err != nil {
		t.Fatalf("the same size: %v %v", grew, err)
	}
	if grew, err := inst.Resize(3 << 20); !grew || err != nil {
		t.Fatalf("a growth: %v %v", grew, err)
	}
	st, _ := os.Stat(inst.Paths.Disk())
	saved, _ := instance.Load(inst.Name)
	if st.Size() != 3<<20 || saved.Disk != units.Size(3<<20) {
		t.Errorf("disk %d bytes, config says %s", st.Size(), saved.Disk)
	}
	instancetest.Running(t, inst.Paths, true)
	if _, err := inst.Resize(4 << 20); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("a resize while running: %v", err)
	}
	if st, _ := os.Stat(inst.Paths.Disk()); st.Size() != 3<<20 {
		t.Errorf("the running instance's disk changed to %d", st.Size())
	}
}

// A stopped instance's policy is saved for its next start; an invalid
// one changes nothing.
func TestSetPolicyStopped(t *testing.T) {
	inst := openNew(t, instance.Config{})
	bad := policy.Policy{Mode: "everything"}
	if _, err := inst.SetPolicy(context.Background(), bad); !errors.As(err, new(*InvalidPolicyError)) {
		t.Fatalf("an invalid policy: %v", err)
	}
	if saved, _ := instance.Load(inst.Name); saved.Network.Policy.Mode == "everything" {
		t.Fatal("an invalid policy was saved")
	}
	p := policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"example.com"}}
	if applied, err := inst.SetPolicy(context.Background(), p); applied || err != nil {
		t.Fatalf("stopped: applied %v, %v", applied, err)
	}
	saved, _ := instance.Load(inst.Name)
	if saved.Network.Policy.Mode != policy.ModeAllowlist || len(saved.Network.Policy.Allow) != 1 {
		t.Errorf("saved %+v", saved.Network.Policy)
	}
}

// The agent of a stopped instance is an error that says how to start it,
// and names a daemon that died.
func TestAgentOfAStoppedInstance(t *testing.T) {
	inst := openNew(t, instance.Config{})
	if _, err := inst.Agent(); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "start it with `cowork start`") {
		t.Errorf("stopped: %v", err)
	}
	os.WriteFile(inst.Paths.PidFile(), []byte("4242\n"), 0o600)
	if _, err := inst.Agent(); err == nil || !strings.Contains(err.Error(), "its hostd (pid 4242) died") {
		t.Errorf("a dead daemon: %v", err)
	}
}

// Resume goes on only with an init that stopped before provisioning, and
// checks what Create made.
func TestResume(t *testing.T) {
	inst := openNew(t, instance.Config{})
	if err := inst.Resume(); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("no disk: %v", err)
	}
	os.WriteFile(inst.Paths.Disk(), nil, 0o600)
	if err := inst.Resume(); err != nil {
		t.Fatalf("a created instance: %v", err)
	}
	os.WriteFile(inst.Paths.Provisioned(), []byte("2026-12-04T00:00:00Z\n"), 0o600)
	if err := inst.Resume(); !errors.As(err, new(*instance.ExistsError)) {
		t.Fatalf("a provisioned instance: %v", err)
	}
}
