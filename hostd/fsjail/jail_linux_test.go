package fsjail

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary plays three parts, picked by its first argument: the
// jail's shim (Arg), the file server the guest drives (attackArg: it does
// in a folder what a hostile guest's requests would make virtiofsd do),
// and an unprivileged hostd (spawnArg: it starts the jail as itself).
const (
	attackArg   = "__fsjail-attack"
	spawnArg    = "__fsjail-spawn"
	roAttackArg = "__fsjail-ro-attack"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case Arg:
			fmt.Fprintln(os.Stderr, Main(os.Args[2:]))
			os.Exit(120)
		case attackArg:
			os.Exit(attack(os.Args[2]))
		case roAttackArg:
			os.Exit(roAttack(os.Args[2]))
		case spawnArg:
			var c Config
			if err := json.Unmarshal([]byte(os.Args[2]), &c); err != nil {
				panic(err)
			}
			os.Exit(runJail(c, os.Args[3]))
		}
	}
	os.Exit(m.Run())
}

// outcome is what each attempt returned inside the jail: "" for success,
// else the errno's name.
type outcome map[string]string

func errName(err error) string {
	if err == nil {
		return ""
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// becomeGuest is what virtiofsd does before it creates a file for a
// request: it switches this thread to the uid and gid the guest named.
func becomeGuest(uid, gid int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return e
	}
	return nil
}

// attack runs inside the jail; it prints its outcomes as JSON.
func attack(dir string) int {
	runtime.LockOSThread()
	o := outcome{}
	try := func(name string, err error) { o[name] = errName(err) }
	p := func(name string) string { return filepath.Join(dir, name) }

	o["uid"], o["gid"] = strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	try("become root", becomeGuest(0, 0))
	try("create as root", os.WriteFile(p("as-root"), []byte("x"), 0o644))
	try("become 4242", becomeGuest(4242, 4242))
	try("create as 4242", os.WriteFile(p("as-4242"), []byte("x"), 0o644))
	try("mkdir as 4242", unix.Mkdirat(unix.AT_FDCWD, p("dir-4242"), 0o755))

	_, err := unix.Open(p("setuid-create"), unix.O_CREAT|unix.O_WRONLY, 0o4755)
	try("create setuid", err)
	_, err = unix.Open(p("setgid-create"), unix.O_CREAT|unix.O_WRONLY, 0o2755)
	try("create setgid", err)
	fd, err := unix.Open(p("plain"), unix.O_CREAT|unix.O_WRONLY, 0o755)
	try("create plain", err)
	try("fchmod setuid", unix.Fchmod(fd, 0o4755))
	try("fchmodat setgid", unix.Fchmodat(unix.AT_FDCWD, p("plain"), 0o2755, 0))
	try("fchmodat sticky", unix.Fchmodat(unix.AT_FDCWD, p("plain"), 0o1755, 0))
	try("chown to root", unix.Fchownat(unix.AT_FDCWD, p("plain"), 0, 0, 0))
	// An open that creates nothing is not judged by its mode argument.
	_, err = unix.Open(p("plain"), unix.O_RDONLY, 0o4755)
	try("open existing", err)

	try("mknod char", unix.Mknodat(unix.AT_FDCWD, p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	try("mknod block", unix.Mknodat(unix.AT_FDCWD, p("disk"), unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0))))
	try("mknod fifo", unix.Mknodat(unix.AT_FDCWD, p("fifo"), unix.S_IFIFO|0o644, 0))
	try("mknod setuid file", unix.Mknodat(unix.AT_FDCWD, p("reg"), unix.S_IFREG|0o4755, 0))

	// A file capability (v2: cap_setuid permitted and effective).
	fcap := []byte{0x01, 0x00, 0x00, 0x02, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	try("setxattr capability", unix.Setxattr(p("plain"), "security.capability", fcap, 0))
	try("setxattr trusted", unix.Setxattr(p("plain"), "trusted.cowork", []byte("x"), 0))
	try("setxattr user", unix.Setxattr(p("plain"), "user.cowork", []byte("x"), 0))

	how := unix.OpenHow{Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o4755}
	_, err = unix.Openat2(unix.AT_FDCWD, p("openat2"), &how)
	try("openat2", err)
	var params [120]byte
	_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params)), 0)
	if e != 0 {
		err = e
	} else {
		err = nil
	}
	try("io_uring", err)
	try("unshare mount namespace", unix.Unshare(unix.CLONE_NEWNS))
	json.NewEncoder(os.Stdout).Encode(o)
	return 0
}

// runJail starts the attack in the jail and passes its output through.
func runJail(c Config, dir string) int {
	cmd, err := Command(c, []string{os.Args[0], attackArg, dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "jail:", err)
		return 1
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "jail:", err)
		return 1
	}
	return 0
}

// expected is what every jail must answer, whoever runs it.
var expected = outcome{
	"become root": "", "create as root": "", "become 4242": "", "create as 4242": "", "mkdir as 4242": "",
	"create setuid": "EPERM", "create setgid": "EPERM", "create plain": "",
	"fchmod setuid": "EPERM", "fchmodat setgid": "EPERM", "fchmodat sticky": "", "chown to root": "",
	"open existing": "",
	"mknod char":    "EPERM", "mknod block": "EPERM", "mknod fifo": "", "mknod setuid file": "EPERM",
	"setxattr capability": "EPERM", "setxattr trusted": "EPERM", "setxattr user": "",
	"openat2": "ENOSYS", "io_uring": "ENOSYS", "unshare mount namespace": "",
}

// checkJail runs the attack as cmd says, then checks the outcomes and, on
// the host, every file the attack left.
func checkJail(t *testing.T, cmd *exec.Cmd, dir string, c Config) {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("jail: %v\n%s", err, stderr)
	}
	var got outcome
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("attack output %q: %v", out, err)
	}
	if got["uid"] != strconv.Itoa(c.GuestUID) || got["gid"] != strconv.Itoa(c.GuestGID) {
		t.Errorf("inside the jail the server is %s:%s, want the guest user %d:%d", got["uid"], got["gid"], c.GuestUID, c.GuestGID)
	}
	for k, want := range expected {
		if got[k] != want {
			t.Errorf("%s: got %q, want %q", k, got[k], want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Uid) != c.UID || int(st.Gid) != c.GID {
			t.Errorf("%s belongs to %d:%d on the host, want the owner %d:%d", e.Name(), st.Uid, st.Gid, c.UID, c.GID)
		}
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			t.Errorf("%s has mode %o: a set-id bit", e.Name(), st.Mode)
		}
		if typ := st.Mode & unix.S_IFMT; typ == unix.S_IFCHR || typ == unix.S_IFBLK {
			t.Errorf("%s is a device node", e.Name())
		}
		if n, err := unix.Lgetxattr(path, "security.capability", nil); err == nil || n > 0 {
			t.Errorf("%s carries a file capability", e.Name())
		}
	}
	for _, name := range []string{"as-root", "as-4242", "dir-4242", "plain", "fifo"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s was not made: %v", name, err)
		}
	}
}

func TestJailAsRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (the unprivileged case is TestJailAsUser)")
	}
	for _, owner := range []int{0, 4000} {
		t.Run(fmt.Sprintf("workspace of uid %d", owner), func(t *testing.T) {
			ws := t.TempDir()
			if err := os.Chown(ws, owner, owner); err != nil {
				t.Fatal(err)
			}
			c, err := ForWorkspace(ws, 1000, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if c.UID != owner || c.GID != owner {
				t.Fatalf("ForWorkspace as root: owner %d:%d, want the folder's %d:%d", c.UID, c.GID, owner, owner)
			}
			// The attack is what the jail runs: like virtiofsd, where the
			// owner can reach it.
			cmd, err := Command(c, []string{userCopy(t), attackArg, ws})
			if err != nil {
				t.Fatal(err)
			}
			checkJail(t, cmd, ws, c)
		})
	}
}

// TestJailAsUser starts the jail from an unprivileged process, as a hostd
// run by a normal user does: only its own uid can be mapped.
func TestJailAsUser(t *testing.T) {
	const user = 4001
	ws := t.TempDir()
	c := Config{UID: os.Getuid(), GID: os.Getgid(), GuestUID: 1000, GuestGID: 1000}
	cfg, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0], spawnArg, string(cfg), ws)
	if os.Getuid() == 0 {
		// Root plays the user: the folder is the user's, and the spawner
		// runs as the user, without root's groups.
		if err := os.Chown(ws, user, user); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Dir(ws), 0o755)
		c.UID, c.GID = user, user
		cfg, _ = json.Marshal(c)
		cmd = exec.Command(userCopy(t), spawnArg, string(cfg), ws)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: user, Gid: user, Groups: []uint32{}}}
	}
	checkJail(t, cmd, ws, c)
}

// userCopy is this test binary where another user can run it (go test
// builds it in a folder only its builder may enter).
func userCopy(t *testing.T) string {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "fsjail.test")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// roAttack runs inside a read-only jail: what a guest's requests would
// make virtiofsd try on a read-only share, and a server that tries to
// make it writable again. It prints its outcomes as JSON.
func roAttack(dir string) int {
	o := outcome{}
	try := func(name string, err error) { o[name] = errName(err) }
	p := func(name string) string { return filepath.Join(dir, name) }
	b, err := os.ReadFile(p("kept"))
	try("read", err)
	o["content"] = string(b)
	try("create", os.WriteFile(p("new"), []byte("x"), 0o644))
	_, err = os.OpenFile(p("kept"), os.O_WRONLY|os.O_TRUNC, 0)
	try("truncate", err)
	try("mkdir", os.Mkdir(p("dir"), 0o755))
	try("remove", os.Remove(p("kept")))
	try("chmod", os.Chmod(p("kept"), 0o777))
	try("setxattr user", unix.Setxattr(p("kept"), "user.cowork", []byte("x"), 0))
	try("write below", os.WriteFile(p("sub/new"), []byte("x"), 0o644))
	try("remount rw", unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND, ""))
	try("mount_setattr rw", unix.MountSetattr(unix.AT_FDCWD, dir, unix.AT_RECURSIVE, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}))
	try("create after", os.WriteFile(p("new"), []byte("x"), 0o644))
	// The host mounts a file system under the folder now, then says go.
	fmt.Println("ready")
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(p("go")); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	try("write in a later mount", os.WriteFile(p("late/x"), []byte("x"), 0o644))
	json.NewEncoder(os.Stdout).Encode(o)
	return 0
}

// TestReadOnlyJail: a read-only share's server reads the folder but
// changes nothing in it, nor in a folder mounted under it, and cannot make
// it writable again; on the host the folder is as it was.
func TestReadOnlyJail(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the folder under the share is a mount of its own")
	}
	ws := t.TempDir()
	os.Chmod(ws, 0o755)
	if err := os.WriteFile(filepath.Join(ws, "kept"), []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(ws, "sub")
	os.Mkdir(sub, 0o777)
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m,mode=0777"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	c, err := ForWorkspace(ws, 1000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	c.ReadOnly = true
	// The folder is a shared mount, as folders are under systemd: what
	// the host mounts under it later propagates to its slaves.
	if err := unix.Mount(ws, ws, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(ws, unix.MNT_DETACH)
	if err := unix.Mount("", ws, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	late := filepath.Join(ws, "late")
	os.Mkdir(late, 0o777)
	cmd, err := Command(c, []string{userCopy(t), roAttackArg, ws})
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		cmd.Wait()
		t.Fatalf("jail: %q %v\n%s", line, err, stderr.String())
	}
	if err := unix.Mount("tmpfs", late, "tmpfs", 0, "size=1m,mode=0777"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(late, unix.MNT_DETACH)
	os.WriteFile(filepath.Join(ws, "go"), nil, 0o644)
	out, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("jail: %v\n%s", err, stderr.String())
	}
	var got outcome
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("attack output %q: %v", out, err)
	}
	want := outcome{
		"read": "", "content": "host data", "create": "EROFS", "truncate": "EROFS", "mkdir": "EROFS",
		"remove": "EROFS", "chmod": "EROFS", "setxattr user": "EROFS", "write below": "EROFS",
		"remount rw": "EPERM", "mount_setattr rw": "EPERM", "create after": "EROFS",
		"write in a later mount": "EROFS",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	entries, _ := os.ReadDir(ws)
	if len(entries) != 4 { // kept, sub, late, go
		t.Errorf("the folder holds %d entries after the attack, want its 4", len(entries))
	}
	if _, err := os.Stat(filepath.Join(late, "x")); err == nil {
		t.Error("the jail wrote in a file system the host mounted under the folder after it started")
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "kept")); string(b) != "host data" {
		t.Errorf("kept holds %q", b)
	}
	// The jail's read-only bind stayed in the jail.
	if err := os.WriteFile(filepath.Join(sub, "host-writes"), nil, 0o644); err != nil {
		t.Errorf("the host cannot write under the folder after the jail ran: %v", err)
	}
	t.Run("needs its folder", func(t *testing.T) {
		if _, err := Command(Config{ReadOnly: true}, []string{"true"}); err == nil {
			t.Error("a read-only jail without a folder was made")
		}
	})
}
