package snapshotcmd

import (
	"encoding/binary"
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

// run runs `cowork [--name box] snapshot args...`.
func run(t *testing.T, name string, args ...string) (out, errOut string, err error) {
	t.Helper()
	ios, _, stdout, stderr := iostreams.Test()
	err = cmdtest.Prepare(NewCmdSnapshot(ios, &name, nil), ios, args...).Execute()
	return stdout.String(), stderr.String(), err
}

func TestArguments(t *testing.T) {
	for _, args := range [][]string{
		{"create"}, {"create", "a", "b"}, {"restore"}, {"restore", "a", "b"}, {"rm"}, {"ls", "x"}, {"bogus"},
		{"create", "../x"}, {"restore", "A"}, {"rm", "ok", "a..b"},
	} {
		name := "box"
		ios, _, _, _ := iostreams.Test()
		err := cmdtest.Prepare(NewCmdSnapshot(ios, &name, nil), ios, args...).Execute()
		if cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("snapshot %q: exit %d (%v), want 2 and one line", args, cmdutil.ExitCode(err), err)
		}
	}
	name := "box"
	ios, _, _, _ := iostreams.Test()
	var got Options
	err := cmdtest.Prepare(NewCmdSnapshot(ios, &name, func(o *Options) error { got = *o; return nil }), ios, "restore", "-f", "s1").Execute()
	if err != nil || got.Op != "restore" || got.Name != "box" || !got.Force || len(got.Snaps) != 1 || got.Snaps[0] != "s1" {
		t.Errorf("options %+v, %v", got, err)
	}
}

// newBox makes the stopped instance box with a raw disk.
func newBox(t *testing.T) instance.Paths {
	t.Helper()
	p, _ := instancetest.New(t, instance.Config{Name: "box", Arch: "arm64", CPUs: 1, Memory: units.GiB, Disk: units.MiB, Boot: instance.BootKernel})
	if err := os.WriteFile(p.Disk(), make([]byte, units.MiB), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// dirty writes a cluster into the instance's fresh overlay, as QEMU would.
func dirty(t *testing.T, p instance.Paths) {
	t.Helper()
	f, err := os.OpenFile(p.DiskFor(instance.DiskQcow2), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const cluster = 1 << 16
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], 4*cluster|1<<63)
	f.WriteAt(e[:], 3*cluster)
	binary.BigEndian.PutUint64(e[:], 5*cluster|1<<63)
	f.WriteAt(e[:], 4*cluster)
	f.WriteAt(make([]byte, cluster), 5*cluster)
}

func TestCommands(t *testing.T) {
	p := newBox(t)
	if _, errOut, err := run(t, "box", "create", "s1"); err != nil || !strings.Contains(errOut, "snapshot s1 of box taken") {
		t.Fatalf("create: %v\n%s", err, errOut)
	}
	if _, _, err := run(t, "box", "create", "s2"); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "box", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || strings.Fields(lines[0])[0] != "NAME" ||
		strings.Fields(lines[1])[0] != "s1" || strings.HasSuffix(lines[1], "*") ||
		strings.Fields(lines[2])[0] != "s2" || !strings.HasSuffix(lines[2], "*") || !strings.Contains(lines[2], " s1 ") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, _, err = run(t, "box", "ls", "--json")
	var all []cowork.Snapshot
	if err != nil || json.Unmarshal([]byte(out), &all) != nil || len(all) != 2 || all[0].Name != "s1" || !all[1].Current ||
		all[1].Parent != "s1" || all[0].Format != "raw" || all[0].Size != int64(units.MiB) || all[0].Allocated <= 0 {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}

	dirty(t, p)
	_, _, err = run(t, "box", "restore", "s1")
	if cmdutil.ExitCode(err) != 1 || !strings.Contains(err.Error(), "64 KiB") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over changes: %v", err)
	}
	if _, errOut, err := run(t, "box", "restore", "--force", "s1"); err != nil || !strings.Contains(errOut, "back at snapshot s1") {
		t.Fatalf("restore --force: %v\n%s", err, errOut)
	}

	_, _, err = run(t, "box", "rm", "s1")
	if err == nil || !strings.Contains(err.Error(), "the disk of box, snapshot s2") {
		t.Errorf("rm of a snapshot in use: %v", err)
	}
	out, _, err = run(t, "box", "rm", "s2", "nope")
	if !strings.Contains(out, "removed snapshot s2") || err == nil || !strings.Contains(err.Error(), "no snapshot nope") {
		t.Errorf("rm s2 nope: %v\n%s", err, out)
	}
	if out, _, _ := run(t, "box", "ls", "--json"); !strings.Contains(out, `"s1"`) || strings.Contains(out, `"s2"`) {
		t.Errorf("after rm: %s", out)
	}
}

func TestRefusals(t *testing.T) {
	p := newBox(t)
	if _, _, err := run(t, "none", "ls"); err == nil || !strings.Contains(err.Error(), "cowork init") {
		t.Errorf("ls of a missing instance: %v", err)
	}
	l, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if _, _, err := run(t, "box", "create", "s1"); err == nil || !strings.Contains(err.Error(), "box is running") {
		t.Errorf("create while running: %v", err)
	}
	if out, _, err := run(t, "box", "ls", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("ls while running: %v %q", err, out)
	}
}
