package clonecmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/units"
)

func TestCloneArguments(t *testing.T) {
	for _, args := range [][]string{{}, {"a"}, {"a", "b", "c"}} {
		ios, _, _, _ := iostreams.Test()
		err := cmdtest.Prepare(NewCmdClone(ios, func(*Options) error { return nil }), ios, args...).Execute()
		if cmdutil.ExitCode(err) != 2 {
			t.Errorf("clone %q: exit %d (%v), want 2", args, cmdutil.ExitCode(err), err)
		}
	}
	ios, _, _, _ := iostreams.Test()
	var got *Options
	err := cmdtest.Prepare(NewCmdClone(ios, func(o *Options) error { got = o; return nil }), ios, "a", "b", "--workspace", "/w", "--start").Execute()
	if err != nil || got.Src != "a" || got.Dst != "b" || got.Workspace != "/w" || !got.Start {
		t.Errorf("options %+v, %v", got, err)
	}
}

// A bad name is a usage error; a missing source says how to make one; a
// clone reports what it made and how to start it.
func TestCloneRun(t *testing.T) {
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	ios, _, _, errOut := iostreams.Test()
	if err := Run(context.Background(), &Options{IO: ios, Src: "src", Dst: "../x"}); cmdutil.ExitCode(err) != 2 {
		t.Errorf("a bad DST: %v", err)
	}
	if err := Run(context.Background(), &Options{IO: ios, Src: "none", Dst: "dst"}); err == nil || !strings.Contains(err.Error(), "cowork init") {
		t.Errorf("a missing SRC: %v", err)
	}
	c := &instance.Config{Name: "src", CPUs: 1, Memory: units.GiB, Disk: units.GiB, Workspace: t.TempDir(), Arch: "arm64", Boot: instance.BootKernel,
		Publish: []instance.Publish{{HostIP: "127.0.0.1", HostPort: 2222, GuestPort: 22}}}
	p, _ := instance.PathsFor("src")
	os.MkdirAll(p.Dir(), 0o700)
	os.WriteFile(p.Disk(), []byte("disk"), 0o600)
	os.WriteFile(p.Kernel(), []byte("kernel"), 0o600)
	os.WriteFile(p.Provisioned(), nil, 0o600)
	c.Save(p.Dir())
	ws := filepath.Join(t.TempDir(), "new-ws")
	if err := Run(context.Background(), &Options{IO: ios, Src: "src", Dst: "dst", Workspace: ws}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dst cloned from src", "workspace " + ws, "ports were not copied", "cowork start --name dst"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if st, err := os.Stat(ws); err != nil || !st.IsDir() {
		t.Error("the new workspace was not made")
	}

	// From a snapshot: a missing one is named; a real one makes a clone
	// whose disk sits on its own copy of the layer.
	errOut.Reset()
	if err := Run(context.Background(), &Options{IO: ios, Src: "src", Dst: "dst2", Snapshot: "none"}); err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("a missing snapshot: %v", err)
	}
	src, _ := cowork.Open("src")
	if _, err := src.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), &Options{IO: ios, Src: "src", Dst: "dst2", Snapshot: "s1"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "dst2 cloned from src's snapshot s1") {
		t.Errorf("stderr: %s", errOut)
	}
	dst, err := cowork.Open("dst2")
	if err != nil || dst.Config.Format() != instance.DiskQcow2 {
		t.Fatalf("the clone: %+v %v", dst, err)
	}
	if all, err := dst.Snapshots(); err != nil || len(all) != 1 || all[0].Name != "s1" || !all[0].Current {
		t.Errorf("the clone's snapshots: %+v %v", all, err)
	}
}
