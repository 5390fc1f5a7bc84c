//go:build e2e

package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"
)

// shareAttack is what root in the guest tries through /workspace to gain
// rights on the host: each line prints the step and its exit code, and the
// host then looks at what is left.
const shareAttack = `
cd /workspace
step() { name=$1; shift; "$@" >/dev/null 2>&1; echo "$name $?"; }
step cp-bash cp /bin/bash rootshell
step chmod-setuid chmod 4755 rootshell
step chmod-setgid chmod 2755 rootshell
step chown-root chown 0:0 rootshell
step install-setuid install -m 4755 /bin/bash rootshell2
step create-setuid python3 -c 'import os; os.open("setuid-new", os.O_CREAT|os.O_WRONLY, 0o6755)'
step mknod-char mknod null c 1 3
step mknod-block mknod sda b 8 0
step mknod-fifo mknod fifo p
step setcap python3 -c 'import os; os.setxattr("rootshell", "security.capability", bytes([1,0,0,2,0x80,0,0,0]+[0]*12))'
step xattr-trusted python3 -c 'import os; os.setxattr("rootshell", "trusted.cowork", b"x")'
step xattr-user python3 -c 'import os; os.setxattr("rootshell", "user.cowork", b"x")'
step open-dir mkdir -m 777 open
step as-nobody setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x > open/by-nobody'
step symlink-out ln -s /etc/shadow shadow
step mkdir mkdir -p deep/er
step touch-root touch deep/er/by-root
`

// TestShare is the share as a hostile guest's root sees it: whatever it
// does, the files it leaves on the host belong to the workspace's owner,
// carry no setuid or setgid bit, no file capability, and none is a device.
// hostd runs as root, the workspace belongs to another user, as when a
// user's own folder is shared by a cowork run with sudo.
func TestShare(t *testing.T) {
	const owner = 4000
	e := newEnv(t)
	if err := os.MkdirAll(e.workspace, 0o755); err != nil {
		t.Fatal(err)
	}
	// The owner must reach its folder, as in a home directory.
	os.Chmod(filepath.Dir(e.workspace), 0o755)
	if err := os.Chown(e.workspace, owner, owner); err != nil {
		t.Fatal(err)
	}
	data, rw := mountFolders(t, e, owner)
	keys := hostSSHAgent(t, e)
	e.must(e.initArgs("--mount", data+":/data:ro", "--mount", rw+":/srv/rw", "--ssh-agent")...)

	t.Run("QEMU and the file server are confined", func(t *testing.T) {
		qemuPid, _ := os.ReadFile(filepath.Join(e.instanceDir("sandbox"), "run", "qemu.pid"))
		if s := procStatus(t, strings.TrimSpace(string(qemuPid))); s["Seccomp"] != "2" {
			t.Errorf("QEMU runs without a seccomp filter: %v", s)
		}
		servers := processesOf("source=" + e.workspace)
		if len(servers) == 0 {
			t.Fatal("no virtiofsd")
		}
		for _, pid := range servers {
			s := procStatus(t, pid)
			// Its capabilities are its namespace's, where the owner is
			// the only identity; on the host it is the owner.
			if s["Seccomp"] != "2" || strings.Fields(s["Uid"])[0] != fmt.Sprint(owner) {
				t.Errorf("virtiofsd %s: seccomp %q, uid %q", pid, s["Seccomp"], s["Uid"])
			}
		}
	})

	t.Run("the guest user owns the workspace", func(t *testing.T) {
		r := e.must("exec", "stat -c %u:%g /workspace && echo hello > mine.txt && stat -c %u mine.txt")
		if r.out != "1000:1000\n1000\n" {
			t.Errorf("in the guest: %q, want the workspace and a new file to be the guest user's (1000)", r.out)
		}
		assertOwner(t, filepath.Join(e.workspace, "mine.txt"), owner)
	})

	t.Run("root in the guest gains nothing on the host", func(t *testing.T) {
		r := e.run("exec", "-u", "root", shareAttack)
		t.Logf("the guest's attempts (step exit-code):\n%s", r.out)
		checkShare(t, e.workspace, owner, r.out)
	})

	t.Run("cp in and out, the guest's stream checked", func(t *testing.T) { checkCopy(t, e) })

	t.Run("more folders, a read-only one kept so by the host", func(t *testing.T) { checkMounts(t, e, data, rw) })

	t.Run("the host's SSH agent lent, its keys kept", func(t *testing.T) { checkSSHAgent(t, e, keys) })
}

// hostSSHAgent serves an agent holding one new key on a socket, and
// makes it the SSH_AUTH_SOCK of every cowork command (so of hostd).
func hostSSHAgent(t *testing.T, e *env) agent.Agent {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := agent.NewKeyring()
	if err := keys.Add(agent.AddedKey{PrivateKey: priv, Comment: "the host's key"}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(filepath.Dir(e.workspace), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keys, c); c.Close() }()
		}
	}()
	e.extraEnv = append(e.extraEnv, "SSH_AUTH_SOCK="+sock)
	return keys
}

// checkSSHAgent: the guest's ssh-add lists the host's key, ssh-keygen
// signs with it (the signature checks out with the public key), the guest
// cannot remove it, and the signature is in the audit log by the key's
// fingerprint.
func checkSSHAgent(t *testing.T, e *env, keys agent.Agent) {
	held, _ := keys.List()
	if len(held) != 1 {
		t.Fatalf("the host agent holds %d keys", len(held))
	}
	pub, _ := ssh.ParsePublicKey(held[0].Blob)
	fp := ssh.FingerprintSHA256(pub)
	if r := e.must("exec", "ssh-add -l"); !strings.Contains(r.out, fp) {
		t.Errorf("ssh-add -l in the guest: %q, want %s", r.out, fp)
	}
	r := e.run("exec", `cd /tmp && printf data > d && ssh-add -L > k.pub && ssh-keygen -Y sign -f k.pub -n file d >/dev/null 2>&1 && ssh-keygen -Y check-novalidate -n file -f k.pub -s d.sig < d`)
	if r.code != 0 {
		t.Errorf("signing in the guest with the host's key: %s", r)
	}
	if r := e.run("exec", "ssh-add -D"); r.code == 0 {
		t.Errorf("ssh-add -D in the guest: %s", r)
	}
	if held, _ := keys.List(); len(held) != 1 {
		t.Errorf("the host agent holds %d keys after the guest's ssh-add -D", len(held))
	}
	if _, ok := find(e.auditLines(t), func(a auditLine) bool { return a.Kind == "ssh-sign" && a.Name == fp && a.Verdict == "allow" }); !ok {
		t.Errorf("no ssh-sign record of %s in the audit log", fp)
	}
}

// mountFolders makes two folders beside the workspace for --mount: data,
// the owner's, holding a file, and rw, another user's.
func mountFolders(t *testing.T, e *env, owner int) (data, rw string) {
	t.Helper()
	data, rw = filepath.Join(filepath.Dir(e.workspace), "data"), filepath.Join(filepath.Dir(e.workspace), "rw")
	for _, d := range []string{data, rw} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "kept"), []byte("host data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, owner, owner); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(rw, owner+1, owner+1); err != nil {
		t.Fatal(err)
	}
	return data, rw
}

// roAttack is what root in the guest tries on a read-only mount: write
// to it, and make it writable first.
const roAttack = `
step() { name=$1; shift; "$@" >/dev/null 2>&1; echo "$name $?"; }
step write sh -c 'echo x > /data/new'
step truncate sh -c ': > /data/kept'
step rm rm -f /data/kept
step remount mount -o remount,rw /data
step write-after-remount sh -c 'echo x > /data/new'
step rm-after-remount rm -f /data/kept
step umount umount /data
step write-under sh -c 'echo x > /data/new'
`

// checkMounts: both mounts are where --mount put them, the read-only one
// read-only whatever root in the guest does (it may remount it writable
// in the guest: the host still refuses), the writable one's new files the
// folder owner's; mount ls lists them; a suspend and resume gives them back.
func checkMounts(t *testing.T, e *env, data, rw string) {
	r := e.must("mount", "ls")
	for _, want := range []string{e.workspace + " /workspace rw", data + " /data ro", rw + " /srv/rw rw"} {
		if !strings.Contains(strings.Join(strings.Fields(r.out), " "), want) {
			t.Errorf("mount ls says %q, want a line %q", r.out, want)
		}
	}
	if r := e.must("exec", "cat /data/kept && echo made > /srv/rw/made && grep -c ' /data virtiofs ro,' /proc/mounts"); r.out != "host data\n1\n" {
		t.Errorf("in the guest: %q, want /data/kept's content and /data mounted read-only", r.out)
	}
	if st, err := os.Stat(rw); err == nil {
		assertOwner(t, filepath.Join(rw, "made"), int(st.Sys().(*syscall.Stat_t).Uid))
	}
	r = e.run("exec", "-u", "root", roAttack)
	t.Logf("root's attempts on /data (step exit-code):\n%s", r.out)
	for _, step := range []string{"write", "truncate", "rm", "write-after-remount", "rm-after-remount"} {
		if strings.Contains(r.out, step+" 0\n") {
			t.Errorf("root in the guest succeeded at %s on the read-only mount", step)
		}
	}
	if !strings.Contains(r.out, "remount 0\n") {
		t.Logf("the guest's kernel refused the remount itself; the host's refusal is what counts")
	}
	entries, _ := os.ReadDir(data)
	if b, _ := os.ReadFile(filepath.Join(data, "kept")); len(entries) != 1 || string(b) != "host data\n" {
		t.Errorf("the read-only folder changed on the host: %d entries, kept holds %q", len(entries), b)
	}
	// Root unmounted /data above and wrote under it: that was the guest's
	// own disk. A suspend and resume mounts the folders again.
	e.must("suspend")
	e.must("start")
	if r := e.must("exec", "cat /data/kept /srv/rw/made"); r.out != "host data\nmade\n" {
		t.Errorf("after a resume: %q", r.out)
	}
}

func assertOwner(t *testing.T, path string, uid int) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != uid {
		t.Errorf("%s belongs to uid %d on the host, want %d", path, s.Uid, uid)
	}
}

// TestShareAsUser is cowork run by a normal user: Debian 12's virtiofsd,
// which wants root, serves the workspace from the jail, and the guest's
// root gets no more than that user has.
func TestShareAsUser(t *testing.T) {
	const user = 1000 // the guest user's uid too: init gives it the host user's
	e := newEnv(t)
	dir := filepath.Dir(e.home)
	os.Chmod(dir, 0o755)
	for _, d := range []string{e.home, e.workspace, filepath.Join(dir, "guest")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chown(d, user, user)
	}
	// The user's own links to the test guest, which lives in root's cache.
	g := testGuest
	for _, p := range []*string{&g.kernel, &g.initrd, &g.disk} {
		link := filepath.Join(dir, "guest", filepath.Base(*p))
		if err := os.Link(*p, link); err != nil {
			t.Skipf("cannot link the test guest where user %d reads it: %v", user, err)
		}
		*p = link
	}
	e.guest = &g
	e.cred = &syscall.Credential{Uid: user, Gid: user, Groups: []uint32{}}
	e.must(e.initArgs()...)
	if pids := e.hostdsOf("sandbox"); len(pids) != 1 {
		t.Fatalf("hostd pids %v", pids)
	} else if st, err := os.Stat(fmt.Sprintf("/proc/%d", pids[0])); err != nil || st.Sys().(*syscall.Stat_t).Uid != user {
		t.Fatalf("hostd does not run as user %d: %v", user, err)
	}
	r := e.run("exec", "-u", "root", shareAttack)
	t.Logf("the guest's attempts (step exit-code):\n%s", r.out)
	checkShare(t, e.workspace, user, r.out)
	if r := e.must("exec", "stat -c %u /workspace/mine.txt 2>/dev/null; echo ok > mine.txt && stat -c %u mine.txt"); !strings.HasSuffix(r.out, "1000\n") {
		t.Errorf("the guest user's new file: %q", r.out)
	}
	assertOwner(t, filepath.Join(e.workspace, "mine.txt"), user)
}

// checkShare reads the attack's step lines (out) and walks the workspace
// on the host: every file the owner's, no set-id bit, no device, no
// attribute outside user.*.
func checkShare(t *testing.T, workspace string, owner uint32, out string) {
	t.Helper()
	steps := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			steps[k] = v
		}
	}
	// What must work, and what must be refused. The rest may report
	// success while changing nothing on the host: chown, and setcap,
	// whose attribute lands under a user.* name.
	for step, want := range map[string]string{
		"cp-bash": "0", "mknod-fifo": "0", "xattr-user": "0", "as-nobody": "0", "symlink-out": "0",
		"mkdir": "0", "touch-root": "0", "open-dir": "0",
		"chmod-setuid": "!0", "chmod-setgid": "!0", "install-setuid": "!0", "create-setuid": "!0",
		"mknod-char": "!0", "mknod-block": "!0", "xattr-trusted": "!0",
	} {
		got, ok := steps[step]
		if !ok || (want == "!0") != (got != "0") {
			t.Errorf("%s: exit %q, want %s", step, got, want)
		}
	}
	err := filepath.Walk(workspace, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(workspace, path)
		if st.Uid != owner || st.Gid != owner {
			t.Errorf("%s belongs to %d:%d on the host, want the workspace owner %d", rel, st.Uid, st.Gid, owner)
		}
		if info.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
			t.Errorf("%s has mode %v on the host", rel, info.Mode())
		}
		if info.Mode()&os.ModeDevice != 0 {
			t.Errorf("%s is a device node on the host", rel)
		}
		buf := make([]byte, 4096)
		n, _ := unix.Llistxattr(path, buf)
		for _, name := range strings.Split(string(buf[:max(n, 0)]), "\x00") {
			if name != "" && !strings.HasPrefix(name, "user.") {
				t.Errorf("%s carries the attribute %s on the host", rel, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// procStatus reads /proc/PID/status as a map of its fields.
func procStatus(t *testing.T, pid string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("process %s: %v", pid, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
