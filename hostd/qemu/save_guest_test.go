//go:build linux

package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// guestEnv is the e2e test guest (hack/e2e.sh exports it): without it, or
// without root (the share's jail), the guest tests skip.
func guestEnv(t *testing.T) (arch, kernel, initrd, disk, cmdline string) {
	t.Helper()
	get := func(k string) string { return os.Getenv("COWORK_E2E_" + k) }
	arch, kernel, initrd, disk, cmdline = get("ARCH"), get("KERNEL"), get("INITRD"), get("DISK"), get("CMDLINE")
	if kernel == "" || disk == "" || arch == "" {
		t.Skip("no e2e guest (COWORK_E2E_ARCH, _KERNEL, _INITRD, _DISK, _CMDLINE; see hack/e2e.sh)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the share's jail needs root")
	}
	if _, err := exec.LookPath(binary(arch)); err != nil {
		t.Skip(err)
	}
	return
}

// guestRun is one run of the e2e guest: what its Config needs that a run
// makes anew (network, console), and the console's output.
type guestRun struct {
	cfg     machine.Config
	console syncbuf.Buffer
	peer    *os.File // the network's other end, read and dropped
}

// newGuestRun wires a fresh network and console into base.
func newGuestRun(t *testing.T, base machine.Config) *guestRun {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	vmEnd, peer := os.NewFile(uintptr(fds[0]), "net-vm"), os.NewFile(uintptr(fds[1]), "net-host")
	go io.Copy(io.Discard, peer)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	g := &guestRun{cfg: base, peer: peer}
	g.console.Max = 1 << 20
	go io.Copy(&g.console, r)
	g.cfg.Network, g.cfg.Console = vmEnd, w
	t.Cleanup(func() { vmEnd.Close(); peer.Close(); w.Close(); r.Close() })
	return g
}

// sh runs a script as root in the guest and returns its stdout.
func sh(ctx context.Context, c *agentclient.Client, script string) (string, error) {
	var out, errb bytes.Buffer
	st, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"/bin/sh", "-c", script}, Dir: "/", User: "root", Stdout: &out, Stderr: &errb})
	if err != nil {
		return "", err
	}
	if st.Code != 0 {
		return out.String(), fmt.Errorf("%q: exit %d: %s", script, st.Code, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// waitAgent polls the agent's Info until it answers.
func waitAgent(t *testing.T, ctx context.Context, vm *VM) (*agentrpc.Client, *agentclient.Client, string) {
	t.Helper()
	// Generous for a loaded TCG host (a boot takes seconds), yet bounded:
	// a guest restored wrong may hang rather than exit.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	rpc, _ := agentrpc.New(vm.DialAgent)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := rpc.Info(actx)
		cancel()
		if err == nil {
			c, _ := agentclient.New(vm.DialAgent)
			return rpc, c, info.BootID
		}
		select {
		case <-vm.Done():
			t.Fatalf("the VM stopped before its agent answered: %v", vm.Err())
		case <-ctx.Done():
			t.Fatalf("the agent never answered: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// A guest saved with its memory comes back where it was: the share
// unplugged (the guest unmounted it first), the guest saved, QEMU killed,
// a new QEMU loads it, the share goes back in. The same kernel runs on
// (boot id), with its tmpfs and a background process; the share works
// again, both ways.
func TestSaveAndRestoreTheGuest(t *testing.T) {
	arch, kernel, initrd, disk, cmdline := guestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "qsv") // short: sockets live in it
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ws := filepath.Join(dir, "ws")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "--sparse=always", disk, filepath.Join(dir, "disk.raw")).CombinedOutput(); err != nil {
		t.Fatalf("copy the guest's disk: %v: %s", err, out)
	}
	base := machine.Config{
		Arch: arch, CPUs: 2, Memory: 1 << 30,
		Disk: filepath.Join(dir, "disk.raw"), Kernel: kernel, Initrd: initrd, Cmdline: cmdline,
		Shares: []machine.Share{{Dir: ws, Tag: "workspace"}}, ShareUID: 1000, ShareGID: 1000,
		MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}, RunDir: filepath.Join(dir, "run"),
	}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo // the save's and restore's own timings
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	run1 := newGuestRun(t, base)
	vm, err := New(run1.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(context.Background(), 0)
	_, guest, bootID := waitAgent(t, ctx, vm)
	defer guest.Close()
	mustSh := func(c *agentclient.Client, script string) string {
		t.Helper()
		out, err := sh(ctx, c, script)
		if err != nil {
			t.Fatalf("%v\nconsole:\n%s", err, run1.console.String())
		}
		return out
	}
	// rcS-early mounts the share and /tmp beside the agent's start.
	mustSh(guest, `i=0; until grep -q ' /workspace virtiofs ' /proc/mounts && grep -q ' /tmp tmpfs ' /proc/mounts; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done`)
	mustSh(guest, `echo kept in memory > /tmp/tmpfs-file && echo before > /workspace/before`)
	mustSh(guest, `setsid sh -c 'echo $$ > /tmp/sleep.pid; exec sleep 31337' </dev/null >/dev/null 2>&1 &
		i=0; until [ -s /tmp/sleep.pid ]; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done`)
	sleepPID := mustSh(guest, `cat /tmp/sleep.pid`)
	if b, err := os.ReadFile(filepath.Join(ws, "before")); err != nil || string(b) != "before\n" {
		t.Fatalf("the share before the save: %q, %v", b, err)
	}

	mustSh(guest, `umount /workspace`)
	began := time.Now()
	if err := vm.DetachShare(ctx, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("share detached in %s", time.Since(began).Round(time.Millisecond))
	guest.Close()
	saveDir := filepath.Join(dir, "saved")
	began = time.Now()
	saved, err := vm.Save(ctx, saveDir)
	if err != nil {
		t.Fatal(err)
	}
	saveTook := time.Since(began)
	if s := vm.State(); s != machine.Paused {
		t.Errorf("after Save the VM is %s, want paused", s)
	}
	if err := vm.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var stState, stRAM syscall.Stat_t
	syscall.Stat(saved.DeviceState(), &stState)
	syscall.Stat(saved.RAM(), &stRAM)
	t.Logf("saved in %s: device state %d KiB, RAM file %d MiB (%d MiB on disk)", saveTook.Round(time.Millisecond),
		stState.Size>>10, stRAM.Size>>20, stRAM.Blocks*512>>20)
	if stRAM.Size != base.Memory || stRAM.Blocks*512 >= base.Memory/2 {
		t.Errorf("the RAM file: %d bytes, %d allocated; want %d, sparse", stRAM.Size, stRAM.Blocks*512, base.Memory)
	}

	run2 := newGuestRun(t, base)
	vm2, err := New(run2.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := vm2.Restore(ctx, saved); err != nil {
		t.Fatalf("restore: %v\nconsole:\n%s", err, run2.console.String())
	}
	defer vm2.Stop(context.Background(), 0)
	loaded := time.Since(began)
	if s := vm2.State(); s != machine.Paused {
		t.Errorf("after Restore the VM is %s, want paused", s)
	}
	// The share is plugged in before the guest runs on, so that it finds
	// it as it wakes, or its server is on its way, for AttachShare.
	served, plugged := vm2.shareState()
	t.Logf("after Restore the share is served %v, plugged %v, its server on its way %v", served, plugged, vm2.pending != nil)
	if !slices.Equal(plugged, []bool{true}) && vm2.pending == nil {
		t.Errorf("after Restore the share is served %v, plugged %v, and no server is on its way", served, plugged)
	}
	if err := vm2.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	_, guest2, bootID2 := waitAgent(t, ctx, vm2)
	defer guest2.Close()
	t.Logf("restored in %s, agent answered %s after the restore began", loaded.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if bootID2 != bootID {
		t.Errorf("boot id %s after the restore, was %s: the guest booted again", bootID2, bootID)
	}
	if out, err := sh(ctx, guest2, `cat /tmp/tmpfs-file`); err != nil || out != "kept in memory" {
		t.Errorf("the tmpfs file after the restore: %q, %v", out, err)
	}
	if out, err := sh(ctx, guest2, `kill -0 `+sleepPID+` && tr '\0' ' ' < /proc/`+sleepPID+`/cmdline`); err != nil || out != "sleep 31337" {
		t.Errorf("the background sleep after the restore: %q, %v", out, err)
	}

	began = time.Now()
	if err := vm2.AttachShare(ctx); err != nil { // what hostd does after a resume
		t.Fatal(err)
	}
	if _, err := sh(ctx, guest2, `i=0; until mount -t virtiofs workspace /workspace 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done
		cat /workspace/before && echo after > /workspace/after`); err != nil {
		t.Fatalf("mount the share again: %v\nconsole:\n%s", err, run2.console.String())
	}
	t.Logf("share mounted in %s", time.Since(began).Round(time.Millisecond))
	if b, err := os.ReadFile(filepath.Join(ws, "after")); err != nil || string(b) != "after\n" {
		t.Errorf("the share after the restore: %q, %v", b, err)
	}
	// The guest's memory is QEMU's shared mapping of the memfd; this
	// process, which stands for hostd, filled it and never mapped it.
	qemuShmem, selfShmem := shmemOf(t, vm2.qemu.cmd.Process.Pid), shmemOf(t, os.Getpid())
	t.Logf("RssShmem: QEMU %d MiB, this process (hostd's part) %d MiB", qemuShmem>>20, selfShmem>>20)
	if qemuShmem < 8<<20 || selfShmem > 4<<20 {
		t.Errorf("the guest's memory is not (only) QEMU's shared mapping: QEMU %d bytes, this process %d bytes", qemuShmem, selfShmem)
	}
}

// shmemOf is a process's RssShmem, in bytes.
func shmemOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "RssShmem:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	t.Fatalf("no RssShmem in /proc/%d/status", pid)
	return 0
}
