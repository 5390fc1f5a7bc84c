package listcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/status"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// command is `cowork ls args...` on test streams, with runF (nil: run it).
func command(ios *iostreams.IOStreams, runF func(*Options) error, args ...string) *cobra.Command {
	cmd := NewCmdList(ios, runF)
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd
}

func ls(t *testing.T, args ...string) (out, errOut string, err error) {
	t.Helper()
	ios, _, o, e := iostreams.Test()
	err = command(ios, nil, args...).ExecuteContext(context.Background())
	return o.String(), e.String(), err
}

func TestListFlags(t *testing.T) {
	for _, c := range []struct {
		args        []string
		json, quiet bool
	}{{nil, false, false}, {[]string{"--json"}, true, false}, {[]string{"-q"}, false, true}, {[]string{"--quiet"}, false, true}} {
		ios, _, _, _ := iostreams.Test()
		var got *Options
		if err := command(ios, func(o *Options) error { got = o; return nil }, c.args...).Execute(); err != nil || got.JSON != c.json || got.Quiet != c.quiet || got.IO != ios {
			t.Errorf("%q: %+v %v", c.args, got, err)
		}
	}
	for _, args := range [][]string{{"sandbox"}, {"--json", "-q"}, {"--all"}} {
		ios, _, _, _ := iostreams.Test()
		ran := false
		err := command(ios, func(*Options) error { ran = true; return nil }, args...).Execute()
		if ran || cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: ran %v, %v (exit %d), want a one-line usage error", args, ran, err, cmdutil.ExitCode(err))
		}
	}
}

// add makes one more stopped instance in the test's COWORK_HOME.
func add(t *testing.T, cfg instance.Config) instance.Paths {
	t.Helper()
	p, _ := instancetest.Add(t, cfg)
	return p
}

// Every instance is listed, in name order, each with its own state and
// settings: one running, one booting, one stopped, a throwaway clone
// naming its parent, and one on a cluster. -q gives the names alone, and
// --json each one's status as `cowork status --json` gives it.
func TestListShowsEveryInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{CPUs: 4, Memory: 4 << 30, Disk: 10 << 30, Arch: "arm64"})
	instancetest.Running(t, p, true)
	instancetest.Running(t, add(t, instance.Config{Name: "booting", CPUs: 2, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64"}), false)
	add(t, instance.Config{Name: "scratch", CPUs: 1, Memory: 512 << 20, Disk: 2 << 30, Arch: "arm64"})
	add(t, instance.Config{Name: "sandbox-rm-0a1b2c3d", CPUs: 4, Memory: 4 << 30, Disk: 10 << 30, Arch: "arm64",
		Throwaway: &instance.Throwaway{Parent: "sandbox", Snapshot: "base"}})
	add(t, instance.Config{Name: "remote", CPUs: 8, Memory: 16 << 30, Disk: 50 << 30, Arch: "amd64",
		Backend: instance.BackendKubeVirt, Cluster: &instance.Cluster{Namespace: "team-a", Image: "registry.test/ubuntu:22.04"}})

	out, errOut, err := ls(t)
	if err != nil || errOut != "" {
		t.Fatalf("ls: %v, stderr %q", err, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := [][]string{
		{"NAME", "STATE", "CPUS", "MEMORY", "DISK", "WHERE", "NOTE"},
		{"booting", "booting", "2", "1 GiB"},
		{"remote", "stopped", "8", "16 GiB", "50 GiB (in the cluster)", "kubevirt, namespace team-a"},
		{"sandbox", "running", "4", "4 GiB", "of 10 GiB", "here"},
		{"sandbox-rm-0a1b2c3d", "stopped", "4", "4 GiB", "here", "throwaway clone of sandbox"},
		{"scratch", "stopped", "1", "512 MiB", "of 2 GiB", "here"},
	}
	if len(lines) != len(want) {
		t.Fatalf("ls printed %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w[0]+" ") {
			t.Errorf("line %d is not %s's:\n%s", i, w[0], out)
		}
		for _, field := range w[1:] {
			if !strings.Contains(lines[i], " "+field) {
				t.Errorf("%s's line %q has no %q", w[0], lines[i], field)
			}
		}
	}
	if strings.Contains(lines[3]+lines[5], "throwaway") {
		t.Errorf("an instance that is no clone is called one:\n%s", out)
	}

	out, _, err = ls(t, "-q")
	if err != nil || out != "booting\nremote\nsandbox\nsandbox-rm-0a1b2c3d\nscratch\n" {
		t.Errorf("ls -q: %v\n%s", err, out)
	}

	out, _, err = ls(t, "--json")
	var sts []status.Status
	if err != nil || json.Unmarshal([]byte(out), &sts) != nil || len(sts) != 5 {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	states := map[string]string{}
	for _, st := range sts {
		states[st.Name] = st.State
	}
	if states["sandbox"] != "running" || !sts[2].Ready || sts[0].Ready || states["scratch"] != "stopped" ||
		sts[3].ThrowawayOf != "sandbox" || sts[1].Cluster == nil || sts[1].Cluster.Namespace != "team-a" || sts[2].CPUs != 4 {
		t.Errorf("ls --json:\n%s", out)
	}
}

// With no instance, ls says how to make one on stderr and prints nothing
// (--json: an empty array), exiting 0: a script's loop runs no times.
func TestListOfNoInstances(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	out, errOut, err := ls(t)
	if err != nil || out != "" || !strings.Contains(errOut, "`cowork init` creates one") {
		t.Errorf("ls: %v, stdout %q, stderr %q", err, out, errOut)
	}
	out, errOut, err = ls(t, "--json")
	if err != nil || out != "[]\n" || errOut != "" {
		t.Errorf("ls --json: %v, stdout %q, stderr %q", err, out, errOut)
	}
	out, _, err = ls(t, "-q")
	if err != nil || out != "" {
		t.Errorf("ls -q: %v, stdout %q", err, out)
	}
}

// An instance whose config cannot be read is listed as unknown, with
// why, rather than hiding the others or failing the command; nothing it
// holds reaches the terminal raw.
func TestListShowsABrokenInstanceAsUnknown(t *testing.T) {
	instancetest.New(t, instance.Config{CPUs: 2, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64"})
	p := add(t, instance.Config{Name: "broken", CPUs: 1, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64"})
	if err := os.WriteFile(p.Config(), []byte("{\"cpus\": \x1b[2J"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := ls(t)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "broken ") || !strings.Contains(lines[1], " unknown ") || !strings.HasPrefix(lines[2], "sandbox ") || !strings.Contains(lines[2], " stopped ") {
		t.Errorf("ls:\n%s", out)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("ls printed an escape:\n%q", out)
	}
	// In JSON, as `cowork status --json` gives it: a name, a state, why.
	out, _, err = ls(t, "--json")
	var got []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	if b := got[0]; b["name"] != "broken" || b["state"] != "unknown" || b["error"] == "" || len(b) != 3 || got[1]["state"] != "stopped" {
		t.Errorf("ls --json: %v", got)
	}
}

// A hostd that died is named in its row, and nothing is cleaned or
// locked by the listing: the pid file stays for `status` (which cleans
// it, and still tells), and no lock file is made, where a lock held for
// a look would turn away a hostd starting that moment.
func TestListNamesADeadHostdAndTouchesNothing(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{CPUs: 2, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64"})
	quick := exec.Command("true")
	if err := quick.Run(); err != nil {
		t.Skip("no true to take a dead pid from:", err)
	}
	dead := quick.Process.Pid
	if err := os.WriteFile(p.PidFile(), []byte(strconv.Itoa(dead)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := ls(t)
	if err != nil || !strings.Contains(out, fmt.Sprintf("hostd (pid %d) died without stopping the VM", dead)) {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	if _, err := os.Stat(p.PidFile()); err != nil {
		t.Errorf("ls removed the dead hostd's pid file: %v", err)
	}
	if _, err := os.Stat(p.LockFile()); !os.IsNotExist(err) {
		t.Errorf("ls made or took the instance's lock file: %v", err)
	}
	st, err := status.Get(context.Background(), instance.DefaultName)
	if err != nil || !strings.Contains(st.Note, fmt.Sprintf("hostd (pid %d) died", dead)) {
		t.Errorf("status after ls: %+v %v", st, err)
	}
	if _, err := os.Stat(p.PidFile()); !os.IsNotExist(err) {
		t.Errorf("status left the dead hostd's pid file: %v", err)
	}
}

// More instances than are asked at once are all listed, in name order;
// one deleted between the listing of names and its look is left out; a
// listing whose context ended says so rather than print a table of
// unknowns.
func TestListManyAndGone(t *testing.T) {
	instancetest.New(t, instance.Config{CPUs: 1, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64"})
	var names []string
	for i := range 2*parallel + 1 {
		name := fmt.Sprintf("i%02d", i)
		add(t, instance.Config{Name: name, CPUs: i + 1, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64"})
		names = append(names, name)
	}
	out, _, err := ls(t, "-q")
	if want := strings.Join(names, "\n") + "\nsandbox\n"; err != nil || out != want {
		t.Fatalf("ls -q: %v\n%s", err, out)
	}
	rows, err := gather(context.Background(), append(names, "gone"))
	if err != nil || len(rows) != len(names) {
		t.Fatalf("gather with one gone: %d rows, %v", len(rows), err)
	}
	for i, r := range rows {
		if r.name != names[i] || r.err != nil || r.st.CPUs != i+1 {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := gather(ctx, names); err == nil {
		t.Error("a listing whose context ended went on")
	}
}

// What a config holds (a throwaway's parent, a cluster's namespace) is
// shown inert: a crafted one cannot drive the terminal.
func TestListPrintsConfigsInert(t *testing.T) {
	instancetest.New(t, instance.Config{CPUs: 1, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64",
		Throwaway: &instance.Throwaway{Parent: "sandbox\x1b]0;owned\x07", Snapshot: "base"}})
	add(t, instance.Config{Name: "remote", CPUs: 1, Memory: 1 << 30, Disk: 2 << 30, Arch: "amd64",
		Backend: instance.BackendKubeVirt, Cluster: &instance.Cluster{Namespace: "team\x1b[2J", Image: "registry.test/ubuntu:22.04"}})
	out, _, err := ls(t)
	if err != nil || strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, "throwaway clone of sandbox") || !strings.Contains(out, "namespace team") {
		t.Errorf("ls: %v\n%q", err, out)
	}
	out, _, err = ls(t, "--json")
	if err != nil || strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("ls --json: %v\n%q", err, out)
	}
}
