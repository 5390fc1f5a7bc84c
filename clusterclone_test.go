package cowork

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// fakeKubeVirtEnv makes this test binary, run as `run --name NAME`, a
// stand-in cowork-hostd-kubevirt: it serves NAME's control socket, its
// guest ready at once, until it is stopped.
const fakeKubeVirtEnv = "COWORK_TEST_FAKE_KUBEVIRT_HOSTD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeKubeVirtEnv) != "" && len(os.Args) == 4 && os.Args[1] == "run" && os.Args[2] == "--name" {
		os.Exit(fakeKubeVirtHostd(os.Args[3]))
	}
	os.Exit(m.Run())
}

func fakeKubeVirtHostd(name string) int {
	p, err := instance.PathsFor(name)
	if err != nil {
		return 1
	}
	h, err := instancetest.Serve(p, controlwire.PhaseVMStarted, controlwire.PhaseReady)
	if err != nil {
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	select {
	case <-h.Done():
	case <-sigs:
		h.Stop()
	}
	return 0
}

// fakeKubeVirt points $COWORK_HOSTD_KUBEVIRT at a script that notes its
// arguments in the file it returns and, for `run`, becomes the stand-in
// daemon when serve (else exits 1: a start that fails), and otherwise
// (`delete`) exits with code.
func fakeKubeVirt(t *testing.T, serve bool, code string) (args string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args = filepath.Join(dir, "args")
	run := "exit 1"
	if serve {
		run = "exec '" + exe + "' \"$@\""
	}
	script := "#!/bin/sh\necho \"$@\" >> '" + args + "'\ncase \"$1\" in run) " + run + ";; esac\necho 'no cluster here' >&2\nexit " + code + "\n"
	bin := filepath.Join(dir, instance.KubeVirtHostd)
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv(KubeVirtHostdEnv, bin)
	t.Setenv(fakeKubeVirtEnv, "1")
	return args
}

// clusterParent makes the stopped, provisioned kubevirt instance name.
func clusterParent(t *testing.T, name string) *Instance {
	t.Helper()
	cfg := kubevirtConfig()
	cfg.Name, cfg.InstanceID = name, "cowork-"+name
	inst := openNew(t, cfg)
	if err := os.WriteFile(inst.Paths.Provisioned(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return inst
}

// instancesBut lists the instances other than the parent name.
func instancesBut(t *testing.T, name string) []string {
	t.Helper()
	names, err := List()
	if err != nil {
		t.Fatal(err)
	}
	var others []string
	for _, n := range names {
		if n != name {
			others = append(others, n)
		}
	}
	return others
}

// A throwaway run of an instance on a cluster is a new kubevirt instance
// whose disk is cloned from the parent's: named for the cluster (the
// parent's name cut so the whole fits 40), its settings the parent's,
// marked as the parent's throwaway and claimed by this process, booted by
// cowork-hostd-kubevirt. Discarding it stops it, records the run in the
// parent's runs log (there is no network log here), and deletes its
// objects in the cluster, then its folder.
func TestClusterThrowawayRun(t *testing.T) {
	const parentName = "team-a-nightly-refactor-of-the-billing-x"
	if len(parentName) != 40 {
		t.Fatalf("the parent's name is %d long, want the longest a cluster takes", len(parentName))
	}
	parent := clusterParent(t, parentName)
	args := fakeKubeVirt(t, true, "0")
	ctx := context.Background()
	tw, err := parent.Throwaway(ctx, ThrowawayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := tw.Config
	switch {
	case len(tw.Name) > 40 || tw.Name != parentName[:28]+"-rm-"+tw.ID || len(tw.ID) != 8:
		t.Errorf("the clone's name %q (id %q): want the parent's cut to fit 40 with -rm-ID", tw.Name, tw.ID)
	case c.Backend != instance.BackendKubeVirt || c.Cluster == nil || c.Cluster.CloneOf != parentName:
		t.Errorf("the clone is not a kubevirt clone of %s's disk: %+v %+v", parentName, c, c.Cluster)
	case c.Cluster.Namespace != "team-a" || c.Cluster.Context != "kind-cowork" || c.Cluster.Image != parent.Config.Cluster.Image:
		t.Errorf("the clone runs elsewhere than its parent: %+v", c.Cluster)
	case parent.Config.Cluster.CloneOf != "":
		t.Errorf("the parent's config was changed: %+v", parent.Config.Cluster)
	case c.Throwaway == nil || c.Throwaway.Parent != parentName || c.Throwaway.Settings != parent.Config.SettingsDigest() || c.Throwaway.Made.IsZero():
		t.Errorf("the clone's throwaway mark: %+v", c.Throwaway)
	case c.InstanceID == parent.Config.InstanceID || c.CPUs != parent.Config.CPUs || c.Disk != parent.Config.Disk || c.Workspace != parent.Config.Workspace:
		t.Errorf("the clone's settings: %+v", c)
	case tw.Ready != ReadyCold || tw.Snapshot != "" || tw.Parent != parent || !tw.Instance.Running():
		t.Errorf("the run: ready %q, snapshot %q, running %v", tw.Ready, tw.Snapshot, tw.Instance.Running())
	}
	if err := c.Validate(0); err != nil {
		t.Errorf("the clone's config: %v", err)
	}
	if _, err := claim(tw.Instance, false); !errors.Is(err, instance.ErrLocked) {
		t.Errorf("the run's clone could be claimed again: %v", err)
	}
	if b, _ := os.ReadFile(args); string(b) != "run --name "+tw.Name+"\n" {
		t.Errorf("cowork-hostd-kubevirt ran with %q, want run --name %s", b, tw.Name)
	}

	info, err := tw.Discard(ctx, RunResult{What: "exec", Command: "make test", ExitCode: 3})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(args); string(b) != "run --name "+tw.Name+"\ndelete --name "+tw.Name+"\n" {
		t.Errorf("cowork-hostd-kubevirt ran with %q, want the clone's run, then its delete", b)
	}
	if _, err := os.Stat(tw.Paths.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clone's folder is left: %v", err)
	}
	if info.Stats.Flows != 0 || info.Instance != tw.Name {
		t.Errorf("run info %+v", info)
	}
	recs, _ := readRuns(t, parent.Paths)
	if len(recs) != 1 {
		t.Fatalf("runs log: %d records, want the run's line alone", len(recs))
	}
	if r := recs[0]; r.Kind != audit.KindRun || r.RunID != tw.ID || r.Run == nil || r.Run.Instance != tw.Name || r.Run.ExitCode != 3 || r.Run.Command != "make test" || r.Run.What != "exec" {
		t.Errorf("the run's record: %+v %+v", r, r.Run)
	}
	if others := instancesBut(t, parentName); len(others) != 0 {
		t.Errorf("instances left: %v", others)
	}
}

// What a throwaway run of a cluster instance cannot do is refused before
// anything is made, here or in the cluster: a parent running (the
// cluster clones only a disk no VM uses), a snapshot asked for, a parent
// never provisioned (its disk is what a clone starts from), no daemon.
func TestClusterThrowawayRefusals(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		what  string
		setup func(*Instance)
		o     ThrowawayOptions
		want  string
	}{
		{"a running parent", func(p *Instance) { instancetest.Running(t, p.Paths, true) }, ThrowawayOptions{},
			"stop box first (`cowork stop --name box`): the cluster clones its disk only while no VM uses it"},
		{"a parent still booting", func(p *Instance) { instancetest.Running(t, p.Paths, false) }, ThrowawayOptions{},
			"stop box first"},
		{"a snapshot", nil, ThrowawayOptions{Snapshot: "base"}, "instance box runs on a cluster, where it has no snapshots: its throwaway runs clone its disk as it is; drop --snapshot base"},
		{"a parent not provisioned", func(p *Instance) { os.Remove(p.Paths.Provisioned()) }, ThrowawayOptions{}, "box has not finished its init"},
		{"no daemon", func(*Instance) { t.Setenv(KubeVirtHostdEnv, filepath.Join(t.TempDir(), "missing")) }, ThrowawayOptions{}, "$" + KubeVirtHostdEnv},
	} {
		t.Run(c.what, func(t *testing.T) {
			parent := clusterParent(t, "box")
			args := fakeKubeVirt(t, true, "0")
			if c.setup != nil {
				c.setup(parent)
			}
			tw, err := parent.Throwaway(ctx, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				if tw != nil {
					tw.Discard(ctx, RunResult{})
				}
				t.Fatalf("Throwaway: %v; want an error saying %q", err, c.want)
			}
			if others := instancesBut(t, "box"); len(others) != 0 {
				t.Errorf("a clone was made: %v", others)
			}
			if _, err := os.Stat(args); err == nil {
				t.Error("cowork-hostd-kubevirt was run")
			}
		})
	}
}

// A clone whose start fails is deleted, in the cluster (where its daemon
// may have made objects) and here, and the run recorded as failed.
func TestClusterThrowawayThatFailsToStartIsDeleted(t *testing.T) {
	parent := clusterParent(t, "box")
	args := fakeKubeVirt(t, false, "0")
	_, err := parent.Throwaway(context.Background(), ThrowawayOptions{})
	if err == nil || !strings.Contains(err.Error(), "throwaway clone box-rm-") || !strings.Contains(err.Error(), "hostd exited") {
		t.Fatalf("Throwaway with a daemon that exits: %v", err)
	}
	b, _ := os.ReadFile(args)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "run --name box-rm-") || lines[1] != "delete"+strings.TrimPrefix(lines[0], "run") {
		t.Errorf("cowork-hostd-kubevirt ran with %q, want the clone's run, then its delete", b)
	}
	if others := instancesBut(t, "box"); len(others) != 0 {
		t.Errorf("the clone is left: %v", others)
	}
	recs, _ := readRuns(t, parent.Paths)
	if len(recs) != 1 || recs[0].Run == nil || recs[0].Run.ExitCode != -1 || !strings.Contains(recs[0].Error, "hostd exited") {
		t.Errorf("the failed run's record: %+v", recs)
	}
}

// A clone whose objects in the cluster could not be deleted stays here,
// for `cowork delete --force` to delete them (and it): the error says
// so, and the run is recorded all the same.
func TestClusterThrowawayLeftWhenTheClusterCannotDelete(t *testing.T) {
	parent := clusterParent(t, "box")
	fakeKubeVirt(t, true, "1")
	tw, err := parent.Throwaway(context.Background(), ThrowawayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tw.Discard(context.Background(), RunResult{What: "exec", Command: "true"})
	if err == nil || !strings.Contains(err.Error(), "delete throwaway clone "+tw.Name+"'s objects in the cluster") ||
		!strings.Contains(err.Error(), "no cluster here") || !strings.Contains(err.Error(), "`cowork delete --force --name "+tw.Name+"`") {
		t.Fatalf("Discard: %v", err)
	}
	if _, err := os.Stat(tw.Paths.Config()); err != nil {
		t.Errorf("the clone's folder went with its objects in the cluster still there: %v", err)
	}
	if tw.Instance.Running() {
		t.Error("the clone still runs")
	}
	if recs, _ := readRuns(t, parent.Paths); len(recs) != 1 || recs[0].Kind != audit.KindRun {
		t.Errorf("the run's record: %+v", recs)
	}
}
