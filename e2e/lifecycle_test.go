//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/coworkhq/cowork"
)

type status struct {
	State         string `json:"state"`
	Ready         bool   `json:"ready"`
	HostdPid      int    `json:"hostd_pid"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	GuestIP       string `json:"guest_ip"`
	AgentVersion  string `json:"agent_version"`
	Backend       string `json:"backend"`
	Accelerator   string `json:"accelerator"`
	CPUs          int    `json:"cpus"`
	MemoryBytes   int64  `json:"memory_bytes"`
	DiskBytes     int64  `json:"disk_bytes"`
	DiskUsedBytes int64  `json:"disk_used_bytes"`
	Workspace     string `json:"workspace"`
	Error         string `json:"error"`
	Note          string `json:"note"`
}

func (e *env) status() status {
	e.t.Helper()
	r := e.must("status", "--json")
	var s status
	if err := json.Unmarshal([]byte(r.out), &s); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, r)
	}
	return s
}

// The whole life of an instance, as a user lives it.
func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	began := time.Now()
	r := e.must(e.initArgs()...)
	for _, phase := range []string{"VM started", "guest kernel booting", "agent connected", "ready"} {
		if !strings.Contains(r.errOut, phase) {
			t.Errorf("init's progress lacks %q:\n%s", phase, r.errOut)
		}
	}
	if st, err := os.Stat(e.workspace); err != nil || !st.IsDir() {
		t.Fatalf("init did not create the workspace: %v", err)
	}
	// The workspace is root's, as cowork runs as root here, and nobody
	// else may write it; the guest's user (uid 1000) writes to it all the
	// same ("workspace both ways"): it is that user's inside.
	if st, err := os.Stat(e.workspace); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Mode().Perm()&0o022 != 0 {
		t.Fatalf("init made the workspace %v (%v); want root's, writable by root alone", st.Mode(), err)
	}

	s := e.status()
	version := strings.Fields(e.must("version").out)[1]
	if s.State != "running" || !s.Ready || s.GuestIP != "192.168.127.2" || s.AgentVersion != version ||
		s.Backend != "qemu" || s.Accelerator == "" || s.CPUs != 2 || s.HostdPid == 0 {
		t.Fatalf("status after init: %+v", s)
	}
	// initArgs asks for 1 GiB of memory and a 2 GiB disk.
	if s.MemoryBytes != 1<<30 || s.DiskBytes != 2<<30 || s.DiskUsedBytes <= 0 || s.DiskUsedBytes > s.DiskBytes ||
		s.Workspace != e.workspace || s.UptimeSeconds < 0 || s.UptimeSeconds > int64(time.Since(began).Seconds())+1 {
		t.Fatalf("status after init: memory, disk, workspace or uptime: %+v", s)
	}
	if r := e.run(e.initArgs()...); r.code == 0 || !strings.Contains(r.errOut, "already exists") {
		t.Errorf("a second init: %s", r)
	}
	if r := e.must("start"); !strings.Contains(r.errOut, "already running") {
		t.Errorf("start on a running instance: %s", r)
	}
	// However short its --timeout, a start leaves a running instance alone.
	if r := e.must("start", "--timeout", "1ms"); !strings.Contains(r.errOut, "already running") {
		t.Errorf("start --timeout 1ms on a running instance: %s", r)
	}
	for _, d := range []string{"0", "-5m"} {
		if r := e.run("start", "--timeout", d); r.code != 2 || !strings.HasPrefix(r.errOut, "cowork: --timeout "+d) ||
			strings.Count(r.errOut, "\n") != 2 || !strings.HasSuffix(r.errOut, "\nRun 'cowork --help' for usage.\n") {
			t.Errorf("start --timeout %s: %s, want a one-line usage error", d, r)
		}
	}
	if now := e.status(); now.State != "running" || !now.Ready || now.HostdPid != s.HostdPid {
		t.Fatalf("a start with a short --timeout touched the running instance: %+v, was %+v", now, s)
	}

	t.Run("exec exit codes", func(t *testing.T) {
		for _, code := range []int{0, 1, 7, 255} {
			if r := e.run("exec", "exit "+strconv.Itoa(code)); r.code != code {
				t.Errorf("exit %d: %s", code, r)
			}
		}
		if r := e.run("exec", "--no-shell", "no-such-program"); r.code != 127 || !strings.Contains(r.errOut, "not found") {
			t.Errorf("missing program: %s", r)
		}
		r := e.run("exec", "echo out; echo err >&2; id -un; pwd")
		if r.out != "out\ncowork\n/workspace\n" || r.errOut != "err\n" {
			t.Errorf("streams, user, workdir: %s", r)
		}
	})

	t.Run("16 MiB both ways byte-exact", func(t *testing.T) {
		data := make([]byte, 16<<20)
		rand.Read(data)
		sum := sha256.Sum256(data)
		r := e.runIn(string(data), "exec", "--no-shell", "cat")
		if r.code != 0 || len(r.out) != len(data) || sha256.Sum256([]byte(r.out)) != sum {
			t.Fatalf("cat of 16 MiB: exit %d, %d bytes back", r.code, len(r.out))
		}
		r = e.runIn(string(data), "exec", "sha256sum")
		if !strings.HasPrefix(r.out, hex.EncodeToString(sum[:])) {
			t.Fatalf("the guest saw other bytes: %s", r.out)
		}
	})

	t.Run("shell on a PTY", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "shell")
		ptmx, err := pty.Start(c)
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		var screen bytes.Buffer
		var mu sync.Mutex
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := ptmx.Read(buf)
				mu.Lock()
				screen.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		time.Sleep(3 * time.Second) // the login shell starts under emulation
		ptmx.Write([]byte("echo h\"\"i; tty; exit 3\r"))
		err = c.Wait()
		mu.Lock()
		got := screen.String()
		mu.Unlock()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("shell exit: %v; screen:\n%s", err, got)
		}
		if !strings.Contains(got, "hi\r\n") || !strings.Contains(got, "/dev/pts/") {
			t.Fatalf("screen:\n%s", got)
		}
	})

	t.Run("workspace both ways", func(t *testing.T) {
		os.WriteFile(filepath.Join(e.workspace, "from-host.txt"), []byte("made on the host\n"), 0o644)
		if r := e.must("exec", "cat /workspace/from-host.txt"); r.out != "made on the host\n" {
			t.Errorf("the guest reads %q", r.out)
		}
		// As the guest's default user, into the root-owned workspace.
		if r := e.must("exec", "echo made in the guest > /workspace/from-guest.txt && id -u"); r.out != "1000\n" {
			t.Errorf("the write was not the default user's: %q", r.out)
		}
		if b, err := os.ReadFile(filepath.Join(e.workspace, "from-guest.txt")); err != nil || string(b) != "made in the guest\n" {
			t.Errorf("the host reads %q %v", b, err)
		}
		assertOwner(t, filepath.Join(e.workspace, "from-guest.txt"), 0)
	})

	t.Run("stop and start keep the disk", func(t *testing.T) {
		e.must("exec", "echo kept > ~/persist.txt && sync")
		r := e.must("stop")
		if !strings.Contains(r.errOut, "stopped") {
			t.Errorf("stop: %s", r)
		}
		// A stop asked for is a stop, not "stopped unexpectedly".
		if s := e.status(); s.State != "stopped" || s.HostdPid != 0 || s.UptimeSeconds != 0 || s.Error != "" {
			t.Fatalf("after stop: %+v", s)
		}
		if _, err := os.Stat(filepath.Join(e.instanceDir("sandbox"), "last-stop.txt")); !os.IsNotExist(err) {
			t.Errorf("a clean stop left a stop reason: %v", err)
		}
		// It went through the agent, which syncs first, not the power button.
		if b, _ := os.ReadFile(filepath.Join(e.instanceDir("sandbox"), "hostd.log")); !strings.Contains(string(b), "the guest agent is powering the guest off") {
			t.Errorf("the stop did not ask the guest agent:\n%s", b)
		}
		if r := e.must("stop"); !strings.Contains(r.errOut, "not running") {
			t.Errorf("stop when stopped: %s", r)
		}
		// A disk grows only when asked, and keeps what it holds.
		if r := e.run("disk", "resize", "3GiB"); r.code != 2 || !strings.Contains(r.errOut, "--yes") {
			t.Errorf("disk resize without a terminal or --yes: %s", r)
		}
		if s := e.status(); s.DiskBytes != 2<<30 {
			t.Errorf("a refused resize changed the disk: %+v", s)
		}
		e.must("disk", "resize", "--yes", "3GiB")
		// Started in process (no CLI start-up to hide a gap): the moment
		// Start says ready, agent.sock serves.
		t.Setenv("COWORK_HOME", e.home)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := cowork.Start(ctx, filepath.Join(filepath.Dir(bin), "cowork-hostd"), "sandbox", nil); err != nil {
			t.Fatalf("start: %v", err)
		}
		c, err := net.Dial("unix", filepath.Join(e.instanceDir("sandbox"), "agent.sock"))
		if err != nil {
			t.Fatalf("ready, yet agent.sock does not serve: %v", err)
		}
		c.Close()
		if r := e.must("exec", "cat ~/persist.txt; echo $(($(cat /sys/block/vda/size) * 512))"); r.out != "kept\n"+strconv.Itoa(3<<30)+"\n" {
			t.Errorf("after a resize and a restart the disk has %q", r.out)
		}
	})

	// The guest powering off or rebooting by itself stops the VM; status
	// says which, in the guest's terms, and start boots it again.
	t.Run("the guest powers off or reboots", func(t *testing.T) {
		for cmd, want := range map[string]string{"poweroff": "the guest powered itself off", "reboot": "the guest rebooted"} {
			// The test guest's init is busybox's: its own poweroff and reboot.
			e.run("exec", "-u", "root", "busybox "+cmd+" -d 1") // its channel may break as the guest goes
			deadline := time.Now().Add(2 * time.Minute)
			for e.status().State != "stopped" {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the VM is still running", cmd)
				}
				time.Sleep(500 * time.Millisecond)
			}
			if s := e.status(); !strings.HasPrefix(s.Error, want) {
				t.Errorf("%s: status says %q, want %q", cmd, s.Error, want)
			}
			if left := processesOf(e.instanceDir("sandbox")); len(left) > 0 {
				t.Errorf("%s: processes left: %v", cmd, left)
			}
			e.must("start")
			if s := e.status(); s.Error != "" {
				t.Errorf("%s: the stop reason outlived the next start: %+v", cmd, s)
			}
		}
	})

	t.Run("hostd killed", func(t *testing.T) {
		dir := e.instanceDir("sandbox")
		qemuPid, _ := os.ReadFile(filepath.Join(dir, "run", "qemu.pid"))
		hostd := e.status().HostdPid
		syscall.Kill(hostd, syscall.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for len(processesOf(filepath.Join(dir, "disk.raw"))) > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if left := processesOf(dir); len(left) > 0 {
			t.Fatalf("QEMU (pid %s) or virtiofsd outlived hostd: %v", strings.TrimSpace(string(qemuPid)), left)
		}
		// The dead hostd's agent.sock is still there: exec must not dial it
		// (a raw "connection refused") but say what happened and what to do.
		if _, err := os.Stat(filepath.Join(dir, "agent.sock")); err != nil {
			t.Errorf("kill -9 left no agent.sock, so this does not test a stale one: %v", err)
		}
		r := e.run("exec", "true")
		if r.code != 1 || !strings.Contains(r.errOut, "is not running") || !strings.Contains(r.errOut, "died") ||
			!strings.Contains(r.errOut, "start it with `cowork start`") || strings.Contains(r.errOut, "connection refused") {
			t.Fatalf("exec after kill -9 hostd: %s", r)
		}
		if _, err := os.Stat(filepath.Join(dir, "agent.sock")); !os.IsNotExist(err) {
			t.Errorf("exec left the stale agent.sock: %v", err)
		}
		if s := e.status(); s.State != "stopped" {
			t.Fatalf("status after kill -9 hostd: %+v", s)
		}
		e.must("start")
		if r := e.must("exec", "cat ~/persist.txt"); r.out != "kept\n" {
			t.Errorf("after recovery: %q", r.out)
		}
	})

	t.Run("two concurrent starts make one VM", func(t *testing.T) {
		e.must("stop")
		var wg sync.WaitGroup
		results := make([]result, 2)
		for i := range results {
			wg.Go(func() { results[i] = e.run("start") })
		}
		wg.Wait()
		for _, r := range results {
			if r.code != 0 {
				t.Fatalf("a concurrent start failed: %s", r)
			}
		}
		dir := e.instanceDir("sandbox")
		if q := processesOf("qemu-system.*" + filepath.Join(dir, "disk.raw")); len(q) != 1 {
			t.Fatalf("%d QEMU processes for one instance: %v", len(q), q)
		}
		if h := e.hostdsOf("sandbox"); len(h) != 1 {
			t.Fatalf("%d hostd processes for one instance: %v", len(h), h)
		}
		if s := e.status(); s.State != "running" || !s.Ready {
			t.Fatalf("after concurrent starts: %+v", s)
		}
	})

	t.Run("ctrl-c during start", func(t *testing.T) {
		e.must("stop")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "start")
		stderr, _ := c.StderrPipe()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var seen string
		for !strings.Contains(seen, "VM started") {
			n, err := stderr.Read(buf)
			seen += string(buf[:n])
			if err != nil {
				t.Fatalf("start ended before the VM started: %q", seen)
			}
		}
		c.Process.Signal(syscall.SIGINT)
		io.Copy(io.Discard, stderr)
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Fatalf("interrupted start: %v", err)
		}
		if s := e.status(); s.State != "stopped" {
			t.Fatalf("after an interrupted start: %+v", s)
		}
		if left := processesOf(e.instanceDir("sandbox")); len(left) > 0 {
			t.Fatalf("processes left after an interrupted start: %v", left)
		}
	})

	// hostd runs in its own session, so the terminal's Ctrl-C never reaches
	// it: an interrupted start has to stop it, even one that has not taken
	// its lock or opened its socket yet.
	t.Run("ctrl-c right after start launches hostd", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "start")
		var errOut bytes.Buffer
		c.Stderr = &errOut
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		for len(e.hostdsOf("sandbox")) == 0 {
			if ctx.Err() != nil {
				t.Fatal("start never launched hostd")
			}
			time.Sleep(5 * time.Millisecond)
		}
		c.Process.Signal(syscall.SIGINT)
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Fatalf("interrupted start: %v\n%s", err, errOut.String())
		}
		dir := e.instanceDir("sandbox")
		deadline := time.Now().Add(10 * time.Second) // QEMU dies with hostd, but not in the same instant
		for len(processesOf(dir)) > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if h, left := e.hostdsOf("sandbox"), processesOf(dir); len(h) > 0 || len(left) > 0 {
			t.Fatalf("after an interrupted start: hostd %v, QEMU or virtiofsd %v\n%s", h, left, errOut.String())
		}
		if s := e.status(); s.State != "stopped" || s.Note != "" {
			t.Fatalf("after an interrupted start: %+v", s)
		}
		e.must("start")
		e.must("exec", "true")
	})

	t.Run("delete", func(t *testing.T) {
		e.must("start")
		before := e.status()
		if r := e.run("delete"); r.code != 2 || !strings.Contains(r.errOut, "--yes") {
			t.Errorf("delete without a terminal or --yes: %s", r)
		}
		if s := e.status(); s.State != "running" || s.HostdPid != before.HostdPid {
			t.Fatalf("a refused delete touched the running instance: %+v", s)
		}
		e.must("delete", "--yes")
		if _, err := os.Stat(e.instanceDir("sandbox")); !os.IsNotExist(err) {
			t.Errorf("the instance directory is still there: %v", err)
		}
		if left := processesOf(e.instanceDir("sandbox")); len(left) > 0 {
			t.Errorf("processes left after delete: %v", left)
		}
		if _, err := os.Stat(filepath.Join(e.workspace, "from-host.txt")); err != nil {
			t.Errorf("delete removed the workspace: %v", err)
		}
		if r := e.run("status"); r.code != 1 || !strings.Contains(r.errOut, "does not exist") {
			t.Errorf("status after delete: %s", r)
		}
	})
}

// Bad input to init is a usage error and creates nothing.
func TestInitRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	missing := filepath.Join(e.home, "no-such.img")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--memory", "0"}, "--memory"},
		{[]string{"--cpus", "0"}, "--cpus"},
		{[]string{"--disk", "1KiB"}, "--disk"},
		{[]string{"--image", missing}, "no-such.img"},
		{[]string{"--name", "a/b"}, "instance name"},
		{[]string{"--name", ".."}, "instance name"},
	} {
		r := e.run(e.initArgs(tc.args...)...)
		if r.code != 2 || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("init %v: %s", tc.args, r)
		}
		if entries, _ := os.ReadDir(e.home); len(entries) > 0 {
			t.Fatalf("init %v left %v behind", tc.args, entries)
		}
		if _, err := os.Stat(e.workspace); err == nil {
			t.Fatalf("init %v created the workspace", tc.args)
		}
	}
}
