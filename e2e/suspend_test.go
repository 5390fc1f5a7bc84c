//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// guestSh runs a shell command in the guest as root and returns its
// trimmed output; it fails the test when the command does.
func (e *env) guestSh(script string) string {
	e.t.Helper()
	return strings.TrimSpace(e.must("exec", "-u", "root", script).out)
}

// bootID is the guest kernel's boot id: a resumed guest keeps it.
func (e *env) bootID() string {
	e.t.Helper()
	return e.guestSh("cat /proc/sys/kernel/random/boot_id")
}

// A suspended guest comes back where it was: the same boot, a background
// process, a tmpfs file, the clock set, the share mounted again and
// working both ways. A suspend is refused while a process uses the
// share, naming it, and --force suspends all the same.
func TestSuspendAndResume(t *testing.T) {
	e := newEnv(t)
	e.must(e.initArgs()...)
	before := e.bootID()
	// Out of /workspace (an exec starts there), which a suspend refuses.
	e.guestSh(`cd / && echo kept in memory > /tmp/tmpfs-file
		setsid sh -c 'echo $$ > /tmp/sleep.pid; exec sleep 31337' </dev/null >/dev/null 2>&1 &
		i=0; until [ -s /tmp/sleep.pid ]; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done`)
	sleepPID := e.guestSh("cat /tmp/sleep.pid")

	t.Run("refused while the share is in use", func(t *testing.T) {
		// A process of its own in /workspace, which outlives any exec.
		e.guestSh(`setsid sh -c 'cd /workspace && exec sleep 3000' </dev/null >/dev/null 2>&1 &
			busy() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && [ "$(readlink $p/cwd)" = /workspace ] && return 0; done; return 1; }
			i=0; until busy; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done`)
		r := e.run("suspend")
		if r.code != 1 || !strings.Contains(r.errOut, "1 guest process uses /workspace (sleep ") || !strings.Contains(r.errOut, "--force") || strings.Count(strings.TrimSpace(r.errOut), "\n") > 1 {
			t.Errorf("suspend with a process in /workspace: %s", r)
		}
		if s := e.status(); s.State != "running" || !s.Ready {
			t.Fatalf("a refused suspend changed the instance: %+v", s)
		}
		e.must("exec", "test -d /workspace && grep -q ' /workspace virtiofs ' /proc/mounts")
	})

	os.WriteFile(filepath.Join(e.workspace, "from-host-before"), []byte("before\n"), 0o644)
	r := e.must("suspend", "--force")
	if !strings.Contains(r.errOut, "suspended") {
		t.Errorf("suspend: %s", r)
	}
	if s := e.status(); s.State != "suspended" {
		t.Errorf("status of a suspended instance: %+v", s)
	}
	if r := e.run("disk", "resize", "3GiB"); r.code == 0 || !strings.Contains(r.errOut, "suspended") {
		t.Errorf("a disk resize of a suspended instance: %s", r)
	}
	if r := e.run("exec", "true"); r.code == 0 || !strings.Contains(r.errOut, "cowork start") {
		t.Errorf("exec on a suspended instance: %s", r)
	}

	r = e.must("start")
	if !strings.Contains(r.errOut, "resumed") {
		t.Errorf("start of a suspended instance: %s", r)
	}
	if after := e.bootID(); after != before {
		t.Fatalf("boot id %s after the resume, %s before: the guest booted again", after, before)
	}
	if got := e.guestSh(`cat /tmp/tmpfs-file; kill -0 ` + sleepPID + ` && echo alive; pgrep -x sleep | wc -l`); got != "kept in memory\nalive\n2" {
		t.Errorf("after the resume, the tmpfs file and the background sleeps (the one in /workspace too, which --force left): %q", got)
	}
	// The clock: the guest was paused while time went on.
	guestNow, err := strconv.ParseInt(e.guestSh("date +%s"), 10, 64)
	if err != nil || abs(guestNow-time.Now().Unix()) > 2 {
		t.Errorf("the guest's clock after the resume: %d, host %d (%v)", guestNow, time.Now().Unix(), err)
	}
	if got := e.guestSh(`cat /workspace/from-host-before && echo from-guest > /workspace/from-guest`); got != "before" {
		t.Errorf("the share after the resume: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(e.workspace, "from-guest")); err != nil || string(b) != "from-guest\n" {
		t.Errorf("the guest's write through the share after the resume: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(e.instanceDir("sandbox"), "suspend")); !os.IsNotExist(err) {
		t.Errorf("the saved state is still there after the resume: %v", err)
	}

	t.Run("stop --suspend and start --cold", func(t *testing.T) {
		e.must("stop", "--suspend")
		if s := e.status(); s.State != "suspended" {
			t.Fatalf("after stop --suspend: %+v", s)
		}
		r := e.must("start", "--cold")
		if !strings.Contains(r.errOut, "discarded the saved state") || strings.Contains(r.errOut, "resumed") {
			t.Errorf("start --cold: %s", r)
		}
		if after := e.bootID(); after == before {
			t.Error("start --cold resumed the guest")
		}
	})
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// A saved state that no longer fits is not resumed: the start says what
// changed and boots the guest cold from its disk, whose data is kept.
func TestSuspendedStateRefused(t *testing.T) {
	e := newEnv(t)
	e.must(e.initArgs()...)
	e.guestSh(`echo on disk > /root/kept && sync`)

	t.Run("other cpus", func(t *testing.T) {
		before := e.bootID()
		e.must("suspend")
		setConfig(t, e, "cpus", 1)
		r := e.must("start")
		if !strings.Contains(r.errOut, "the CPU count changed (2 → 1)") || !strings.Contains(r.errOut, "cold") {
			t.Errorf("start after a change of cpus: %s", r)
		}
		if e.bootID() == before {
			t.Error("the guest was resumed with other cpus")
		}
		if got := e.guestSh("cat /root/kept; nproc"); got != "on disk\n1" {
			t.Errorf("after the cold boot: %q", got)
		}
	})

	t.Run("another QEMU binary", func(t *testing.T) {
		real, err := exec.LookPath("qemu-system-aarch64")
		if err != nil {
			t.Skip(err)
		}
		before := e.bootID()
		e.must("suspend")
		wrap := t.TempDir()
		script := "#!/bin/sh\nexec " + real + " \"$@\"\n"
		os.WriteFile(filepath.Join(wrap, "qemu-system-aarch64"), []byte(script), 0o755)
		e.extraEnv = append(e.extraEnv, "PATH="+wrap+":"+os.Getenv("PATH"))
		defer func() { e.extraEnv = e.extraEnv[:len(e.extraEnv)-1] }()
		r := e.must("start")
		if !strings.Contains(r.errOut, "the hypervisor's binary changed") {
			t.Errorf("start under another QEMU: %s", r)
		}
		if e.bootID() == before {
			t.Error("the guest was resumed under another QEMU")
		}
	})

	t.Run("hostd killed during the suspend", func(t *testing.T) {
		before := e.bootID()
		pids := e.hostdsOf("sandbox")
		if len(pids) != 1 {
			t.Fatalf("hostds: %v", pids)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		sus := e.cmd(ctx, "suspend")
		if err := sus.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once the save has begun: its device state is being written.
		state := filepath.Join(e.instanceDir("sandbox"), "suspend", "device.state")
		for i := 0; ; i++ {
			if _, err := os.Stat(state); err == nil {
				break
			}
			if i > 3000 {
				t.Fatal("the suspend never began saving")
			}
			time.Sleep(10 * time.Millisecond)
		}
		syscall.Kill(pids[0], syscall.SIGKILL)
		sus.Wait()
		r := e.must("start")
		if strings.Contains(r.errOut, "resumed") {
			t.Errorf("a suspend cut short was resumed: %s", r)
		}
		if e.bootID() == before {
			t.Error("the guest was not booted again")
		}
		if got := e.guestSh("cat /root/kept"); got != "on disk" {
			t.Errorf("the disk after a suspend cut short: %q", got)
		}
	})

	t.Run("disk full", func(t *testing.T) {
		before := e.bootID()
		dir := filepath.Join(e.instanceDir("sandbox"), "suspend")
		os.MkdirAll(dir, 0o700)
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Skipf("mount a small tmpfs: %v", err)
		}
		defer syscall.Unmount(dir, syscall.MNT_DETACH)
		r := e.run("suspend")
		if r.code == 0 || !strings.Contains(r.errOut, "no space left on device") || !strings.Contains(r.errOut, "runs on") {
			t.Errorf("suspend onto a full disk: %s", r)
		}
		if s := e.status(); s.State != "running" || !s.Ready {
			t.Fatalf("after a suspend onto a full disk: %+v", s)
		}
		if after := e.bootID(); after != before {
			t.Error("the guest rebooted")
		}
		e.must("exec", "grep -q ' /workspace virtiofs ' /proc/mounts && ls /workspace")
	})
}

// setConfig changes one field of the instance's config.json.
func setConfig(t *testing.T, e *env, key string, value any) {
	t.Helper()
	p := filepath.Join(e.instanceDir("sandbox"), "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	b, _ = json.Marshal(m)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
