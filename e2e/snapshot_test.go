//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSnapshot takes a disk snapshot of a stopped guest, changes a file,
// and restores the snapshot: the guest boots with the file as it was. A
// running instance cannot be snapshotted, a disk with changes is restored
// only with --force, and a snapshot the disk sits on cannot be removed.
func TestSnapshot(t *testing.T) {
	e := newEnv(t)
	e.must(e.initArgs()...)
	root := func(script string) string { return e.must("exec", "-u", "root", script).out }
	root("echo one >/root/f && sync")
	e.must("stop")
	if r := e.must("snapshot", "create", "s1"); !strings.Contains(r.errOut, "snapshot s1 of sandbox taken") {
		t.Errorf("create: %s", r)
	}

	e.must("start")
	if r := e.run("snapshot", "create", "s2"); r.code == 0 || !strings.Contains(r.errOut, "is running") {
		t.Errorf("a snapshot of a running instance: %s", r)
	}
	if got := root("cat /root/f"); got != "one\n" {
		t.Fatalf("after the snapshot /root/f is %q", got)
	}
	root("echo two >/root/f && sync")
	e.must("stop")

	if r := e.run("snapshot", "restore", "s1"); r.code != 1 || !strings.Contains(r.errOut, "--force") {
		t.Errorf("a restore over changes without --force: %s", r)
	}
	e.must("snapshot", "restore", "s1", "--force")
	e.must("start")
	if got := root("cat /root/f"); got != "one\n" {
		t.Errorf("after restoring s1 /root/f is %q, want one", got)
	}
	e.must("stop")

	var ls []struct {
		Name    string `json:"name"`
		Current bool   `json:"current"`
	}
	if r := e.must("snapshot", "ls", "--json"); json.Unmarshal([]byte(r.out), &ls) != nil || len(ls) != 1 || ls[0].Name != "s1" || !ls[0].Current {
		t.Errorf("snapshot ls: %s", r)
	}
	if r := e.run("snapshot", "rm", "s1"); r.code == 0 || !strings.Contains(r.errOut, "the disk of sandbox") {
		t.Errorf("rm of the snapshot the disk sits on: %s", r)
	}
	// A later snapshot nothing sits on goes.
	e.must("snapshot", "create", "s2")
	e.must("snapshot", "restore", "s1")
	if r := e.must("snapshot", "rm", "s2"); !strings.Contains(r.out, "removed snapshot s2") {
		t.Errorf("rm s2: %s", r)
	}
	e.must("start")
	if got := root("cat /root/f"); got != "one\n" {
		t.Errorf("after rm s2 /root/f is %q, want one", got)
	}
}
