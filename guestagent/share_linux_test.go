package guestagent

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
	"golang.org/x/sys/unix"
)

// tmpfsAt mounts a tmpfs at a new directory under dir and returns it; the
// test is skipped where mounts are not allowed (not root, a container).
func tmpfsAt(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts need root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	look, err := lookMounts("/proc/self/mountinfo", dir)
	if err != nil {
		t.Fatal(err)
	}
	return look.mounted
}

// The real calls on a real mount: a process whose working directory is on
// it is named and keeps the release from happening unless forced; forced,
// the mount goes; a second release finds nothing to do.
func TestShareReleaseRealMount(t *testing.T) {
	dir := tmpfsAt(t, filepath.Join(t.TempDir(), "ws"))
	cmd := exec.Command("sleep", "3600")
	cmd.Dir = dir // set before the exec that Start waits for
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})

	rep := release(t, s, dir, false)
	r := rep.ShareRelease
	if r == nil || r.Unmounted || r.NotMounted {
		t.Fatalf("in use, not forced: %+v (%+v)", rep, r)
	}
	found := false
	for _, u := range r.Users {
		found = found || u.PID == cmd.Process.Pid && u.Comm == "sleep"
	}
	if !found || !mounted(t, dir) {
		t.Fatalf("users %+v; want sleep (pid %d), and the mount kept", r.Users, cmd.Process.Pid)
	}

	rep = release(t, s, dir, true)
	if r := rep.ShareRelease; r == nil || !r.Unmounted || len(r.Users) == 0 || mounted(t, dir) {
		t.Fatalf("forced: %+v (%+v); mounted: %v", rep, r, mounted(t, dir))
	}
	if rep := release(t, s, dir, false); rep.ShareRelease == nil || !rep.ShareRelease.NotMounted {
		t.Fatalf("again: %+v", rep)
	}
}

// A plain release unmounts a share nothing uses; one the kernel finds busy
// (a mount under it) is refused with that reason, and kept.
func TestShareReleaseRealBusy(t *testing.T) {
	dir := tmpfsAt(t, filepath.Join(t.TempDir(), "ws"))
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	if rep := release(t, s, dir, false); rep.ShareRelease == nil || !rep.ShareRelease.Unmounted || mounted(t, dir) {
		t.Fatalf("unused: %+v", rep)
	}
	tmpfsAt(t, dir)
	tmpfsAt(t, filepath.Join(dir, "sub"))
	rep := release(t, s, dir, false)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "a mount under it") || !mounted(t, dir) {
		t.Fatalf("busy: %+v", rep)
	}
	// Another filesystem there is not taken for the share.
	rep = mountCall(t, s, "workspace", dir)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, `"tmpfs" mount`) {
		t.Fatalf("share_mount over a tmpfs: %+v", rep)
	}
}
