//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSnapshot takes a disk snapshot of a stopped guest, changes a file,
// and restores the snapshot: the guest boots with the file as it was. A
// disk with changes is restored only with --force, and a snapshot the
// disk sits on cannot be removed. A snapshot of a running guest keeps its
// memory: restored, the next start resumes the guest where it was.
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

	t.Run("with memory", func(t *testing.T) {
		before := e.bootID()
		root("cd / && echo v1 > /tmp/mem")
		published := strings.TrimSpace(e.must("port", "publish", "8000:0").out)
		r := e.must("snapshot", "create", "m1") // suspends, snapshots, resumes
		if !strings.Contains(r.errOut, "disk and memory") || !strings.Contains(r.errOut, "is ready") {
			t.Errorf("a snapshot of a running instance: %s", r)
		}
		if got := e.bootID(); got != before {
			t.Fatalf("the instance booted again after its snapshot (boot id %s, was %s)", got, before)
		}
		// What `port publish` opened is open again after the resume.
		if r := e.must("port", "ls"); !strings.Contains(r.out, published) {
			t.Errorf("port ls after the snapshot: %s, want %s", r.out, published)
		}
		root("echo v2 > /tmp/mem")
		e.must("stop")
		if r := e.must("snapshot", "restore", "m1", "--force"); !strings.Contains(r.errOut, "resumes it there") {
			t.Errorf("restore m1: %s", r)
		}
		if r := e.must("start"); !strings.Contains(r.errOut, "resumed") {
			t.Errorf("start after restoring a snapshot with memory: %s", r)
		}
		if got := e.bootID(); got != before {
			t.Errorf("boot id %s after restoring m1, %s when it was taken", got, before)
		}
		if got := root("cat /tmp/mem"); got != "v1\n" {
			t.Errorf("the tmpfs file after restoring m1: %q, want v1", got)
		}
	})

	t.Run("clone from a snapshot of a running instance", func(t *testing.T) {
		defer e.run("--name", "fork", "delete", "--force")
		r := e.must("clone", "sandbox", "fork", "--snapshot", "s1", "--start")
		if !strings.Contains(r.errOut, "cloned from sandbox's snapshot s1") || !strings.Contains(r.errOut, "fork is ready") {
			t.Errorf("clone --snapshot: %s", r)
		}
		if got := e.must("--name", "fork", "exec", "-u", "root", "cat /root/f").out; got != "one\n" {
			t.Errorf("the clone of s1 reads /root/f as %q, want one", got)
		}
		if s := e.status(); s.State != "running" {
			t.Errorf("the source after the clone: %+v", s)
		}
	})

	t.Run("throwaway runs", func(t *testing.T) {
		defer e.run("pool", "drain")
		// Cold: a clone of the latest snapshot (m1), made for the run. m1
		// holds the guest's memory, so the clone resumes it (a fork: the
		// parent's boot id), and its changes go with it but for
		// /workspace's.
		parentBoot := e.bootID()
		r := e.run("exec", "--rm", "-u", "root", "cat /proc/sys/kernel/random/boot_id /root/f; echo x > /root/g; echo kept > /workspace/rm-wrote; exit 3")
		if r.code != 3 || r.out != parentBoot+"\none\n" || !strings.Contains(r.errOut, "(cold, from snapshot m1") || !strings.Contains(r.errOut, "deleted") {
			t.Errorf("exec --rm (want the boot id %s, then one): %s", parentBoot, r)
		}
		if b, err := os.ReadFile(filepath.Join(e.workspace, "rm-wrote")); err != nil || string(b) != "kept\n" {
			t.Errorf("what the run wrote to /workspace: %q %v", b, err)
		}
		// Forks of one memory do not share their randomness or identity:
		// each reseeded from the host and took a machine-id of its own.
		identity := "test ! -e /root/g && cat /etc/machine-id && head -c 16 /dev/urandom | od -An -tx1"
		first := e.must("exec", "--rm", "-u", "root", identity).out

		// Warm: a suspended clone from the pool, resumed; the run starts
		// the next one's making in the background.
		if r := e.must("pool", "fill"); !strings.Contains(r.out, "made sandbox-rm-") {
			t.Errorf("pool fill: %s", r)
		}
		// Its hostd holds it loaded and paused, for the run to wake.
		if dirs, _ := filepath.Glob(filepath.Join(e.home, "sandbox-rm-*")); len(dirs) != 1 {
			t.Errorf("clones after pool fill: %q", dirs)
		} else if st := e.run("--name", filepath.Base(dirs[0]), "status"); !strings.Contains(st.out, "standby") {
			t.Errorf("the warm clone's status: %s", st)
		} else {
			clone := filepath.Base(dirs[0])
			// ls lists both: the parent running, the clone standing by,
			// named as the parent's.
			var listed []struct {
				Name, State string
				ThrowawayOf string `json:"throwaway_of"`
			}
			if err := json.Unmarshal([]byte(e.must("ls", "--json").out), &listed); err != nil {
				t.Errorf("ls --json: %v", err)
			}
			seen := map[string]string{}
			for _, l := range listed {
				seen[l.Name] = l.State + " " + l.ThrowawayOf
			}
			if seen["sandbox"] != "running " || seen[clone] != "standby sandbox" {
				t.Errorf("ls --json lists %q", seen)
			}
			// Its hold stopped, it stays suspended; the next fill holds
			// it again, and makes no other.
			e.must("--name", clone, "stop")
			if st := e.run("--name", clone, "status"); strings.Contains(st.out, "standby") || !strings.Contains(st.out, "suspended") {
				t.Errorf("the warm clone after its hold was stopped: %s", st)
			}
			if r := e.must("pool", "fill"); strings.Contains(r.out, "made ") {
				t.Errorf("pool fill made another clone: %s", r)
			}
			if st := e.run("--name", clone, "status"); !strings.Contains(st.out, "standby") {
				t.Errorf("the warm clone after the next fill: %s", st)
			}
		}
		r = e.must("exec", "--rm", "-u", "root", identity)
		if !strings.Contains(r.errOut, "(warm, from snapshot m1") {
			t.Errorf("exec --rm with a warm clone ready: %s", r)
		}
		a, b := strings.SplitN(first, "\n", 2), strings.SplitN(r.out, "\n", 2)
		if len(a) != 2 || len(b) != 2 || len(a[0]) != 32 || a[0] == b[0] || a[1] == b[1] {
			t.Errorf("two forks of m1 have the same machine-id or random bytes, or say none:\n%s\n%s", first, r.out)
		}
		var runs int
		for _, line := range strings.Split(e.must("proxy", "--runs", "--json", "--since", "0", "--follow=false").out, "\n") {
			if strings.Contains(line, `"kind":"run"`) {
				runs++
			}
		}
		if runs != 3 {
			t.Errorf("runs.jsonl holds %d runs, want 3", runs)
		}
		if s := e.status(); s.State != "running" {
			t.Errorf("the parent after its throwaway runs: %+v", s)
		}
		// A run killed outright (SIGKILL: it cleans nothing up): its
		// clone's VM powers itself off, and the next drain deletes it.
		e.must("pool", "drain")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "exec", "--rm", "touch /tmp/started; sleep 600")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		var clone string
		for deadline := time.Now().Add(time.Minute); clone == ""; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the killed run's clone never ran its command")
			}
			dirs, _ := filepath.Glob(filepath.Join(e.home, "sandbox-rm-*"))
			if len(dirs) == 1 && e.run("--name", filepath.Base(dirs[0]), "exec", "test -e /tmp/started").code == 0 {
				clone = filepath.Base(dirs[0])
			}
		}
		c.Process.Kill()
		c.Wait()
		for deadline := time.Now().Add(30 * time.Second); len(e.hostdsOf(clone)) > 0; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the VM of %s, whose run was killed, still runs 30 s later", clone)
			}
		}
		if r := e.must("pool", "drain"); !strings.Contains(r.out, "deleted "+clone) {
			t.Errorf("drain after the killed run: %s", r)
		}
		left, _ := filepath.Glob(filepath.Join(e.home, "sandbox-rm-*"))
		if len(left) != 0 {
			t.Errorf("clones left after the runs and a drain: %q", left)
		}
	})
}
