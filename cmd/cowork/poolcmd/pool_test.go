package poolcmd

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/units"
)

func run(t *testing.T, name string, args ...string) (out, errOut string, err error) {
	t.Helper()
	ios, _, stdout, stderr := iostreams.Test()
	err = cmdtest.Prepare(NewCmdPool(ios, &name, nil), ios, args...).Execute()
	return stdout.String(), stderr.String(), err
}

func TestArguments(t *testing.T) {
	for _, args := range [][]string{
		{"fill", "x"}, {"fill", "--hot", "--warm"}, {"fill", "--size", "-1"}, {"fill", "--size", "9"}, {"ls", "x"}, {"drain", "x"}, {"bogus"},
	} {
		_, _, err := run(t, "box", args...)
		if cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("pool %q: exit %d (%v), want 2 and one line", args, cmdutil.ExitCode(err), err)
		}
	}
	name := "box"
	ios, _, _, _ := iostreams.Test()
	var got Options
	err := cmdtest.Prepare(NewCmdPool(ios, &name, func(o *Options) error { got = *o; return nil }), ios, "fill", "--size", "2", "--hot", "--snapshot", "s1").Execute()
	if err != nil || got.Op != "fill" || got.Name != "box" || got.Size != 2 || !got.SizeGiven || !got.Hot || got.Snapshot != "s1" {
		t.Errorf("options %+v, %v", got, err)
	}
}

// ls shows the settings and the clones; drain empties the pool's size and
// deletes its free clones, and leaves a clone in use to its run.
func TestListAndDrain(t *testing.T) {
	instancetest.New(t, instance.Config{Name: "box", Arch: "arm64", CPUs: 1, Memory: units.GiB, Disk: units.MiB, Boot: instance.BootKernel})
	box, err := cowork.Open("box")
	if err != nil {
		t.Fatal(err)
	}
	if err := box.SetPoolSettings(cowork.PoolSettings{Size: 2, Hot: true}); err != nil {
		t.Fatal(err)
	}
	// Two clones as the pool makes them: one free and running, one in a
	// run (its claim held by this process).
	free := clone(t, "box-rm-00000001", "base")
	instancetest.Running(t, free, true)
	busy := clone(t, "box-rm-00000002", "base")
	lock, err := instance.LockFile(busy.Claim(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	if _, err := lock.File().WriteString("4242\n"); err != nil { // the run's pid
		t.Fatal(err)
	}

	out, errOut, err := run(t, "box", "ls", "--json")
	var l Listing
	if err != nil || json.Unmarshal([]byte(out), &l) != nil || l.Size != 2 || !l.Hot || len(l.Clones) != 2 {
		t.Fatalf("ls --json: %q %q %v", out, errOut, err)
	}
	states := map[string]string{}
	for _, c := range l.Clones {
		states[c.Name] = c.State
	}
	if states["box-rm-00000001"] != cowork.PoolHot || states["box-rm-00000002"] != cowork.PoolBusy {
		t.Errorf("states %v", states)
	}
	if out, errOut, err := run(t, "box", "ls"); err != nil || !strings.Contains(errOut, "size 2, hot clones") || !strings.Contains(out, "box-rm-00000002  base") {
		t.Errorf("ls: %q %q %v", out, errOut, err)
	}

	out, _, err = run(t, "box", "drain")
	if err != nil || out != "deleted box-rm-00000001\n" {
		t.Errorf("drain: %q %v", out, err)
	}
	if s, _ := box.PoolSettings(); s.Size != 0 || !s.Hot {
		t.Errorf("settings after drain: %+v", s)
	}
	if _, err := cowork.Open("box-rm-00000002"); err != nil {
		t.Errorf("the clone in use was deleted: %v", err)
	}
}

// clone makes a throwaway clone's folder and config, as the pool would.
func clone(t *testing.T, name, snap string) instance.Paths {
	t.Helper()
	p, err := instance.PathsFor(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &instance.Config{Name: name, Arch: "arm64", CPUs: 1, Memory: units.GiB, Disk: units.MiB, Boot: instance.BootKernel, Workspace: t.TempDir(),
		Throwaway: &instance.Throwaway{Parent: "box", Snapshot: snap}}
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	return p
}
