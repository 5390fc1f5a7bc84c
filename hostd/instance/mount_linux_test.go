package instance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A bind mount of a folder is that folder: a read-only mount of it and a
// writable one of its bind are refused, and so is a bind of cowork's
// own folder; folders in /dev, /proc and /sys are the host's own.
func TestCheckMountHostsSeesThroughBinds(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to bind mount")
	}
	root := t.TempDir()
	home, ws, data, bind, homeBind := filepath.Join(root, "home"), filepath.Join(root, "ws"), filepath.Join(root, "data"), filepath.Join(root, "bind"), filepath.Join(root, "home-bind")
	for _, d := range []string{home, ws, data, bind, homeBind} {
		os.MkdirAll(d, 0o755)
	}
	for src, dst := range map[string]string{data: bind, home: homeBind} {
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(dst, unix.MNT_DETACH)
	}
	check := func(m ...Mount) error { return (&Config{Workspace: ws, Mounts: m}).CheckMountHosts(home) }
	if err := check(Mount{Host: data, Guest: "/a", ReadOnly: true}, Mount{Host: bind, Guest: "/b"}); err == nil || !strings.Contains(err.Error(), "overlaps another mount's") {
		t.Errorf("a folder and its bind: %v", err)
	}
	if err := check(Mount{Host: homeBind, Guest: "/h"}); err == nil || !strings.Contains(err.Error(), "cowork's own folder") {
		t.Errorf("a bind of cowork's folder: %v", err)
	}
	for _, d := range []string{"/dev", "/dev/shm", "/proc/self", "/sys"} {
		if err := check(Mount{Host: d, Guest: "/x"}); err == nil || !strings.Contains(err.Error(), "the host's own") {
			t.Errorf("%s: %v", d, err)
		}
	}
}
