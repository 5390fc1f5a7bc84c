package guestagent

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// fakeProc is a /proc tree in a temporary directory: each process a
// directory of the links and files the scan reads.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	p := &fakeProc{t: t, root: t.TempDir()}
	p.mkdir("self")
	p.mountinfo("")
	return p
}

func (p *fakeProc) mkdir(rel string) {
	if err := os.MkdirAll(filepath.Join(p.root, rel), 0o755); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProc) write(rel, content string) {
	p.mkdir(filepath.Dir(rel))
	if err := os.WriteFile(filepath.Join(p.root, rel), []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// proc makes process pid named comm ("" for no comm file: a process that
// ends as it is looked at); links maps "cwd", "root", "exe" or "fd/N" to
// what the kernel would say it names, and "maps" to the maps file.
func (p *fakeProc) proc(pid int, comm string, links map[string]string) {
	dir := strconv.Itoa(pid)
	p.mkdir(filepath.Join(dir, "fd"))
	if comm != "" {
		p.write(filepath.Join(dir, "comm"), comm+"\n")
	}
	for name, target := range links {
		if name == "maps" {
			p.write(filepath.Join(dir, "maps"), target)
			continue
		}
		if err := os.Symlink(target, filepath.Join(p.root, dir, name)); err != nil {
			p.t.Fatal(err)
		}
	}
}

func (p *fakeProc) mountinfo(lines ...string) {
	p.write("self/mountinfo", strings.Join(lines, "\n"))
}

const (
	wsMount  = "36 25 0:45 / /workspace rw,relatime shared:20 - virtiofs workspace rw"
	ws2Mount = "37 25 0:46 / /workspace2 rw,relatime - tmpfs tmpfs rw"
)

func TestShareUsers(t *testing.T) {
	p := newFakeProc(t)
	heap := "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n"
	anon := "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
	p.proc(10, "bash", map[string]string{"cwd": "/workspace", "root": "/"})
	p.proc(11, "prefix", map[string]string{"cwd": "/workspace2", "root": "/", "exe": "/workspace2/bin/x"})
	p.proc(12, "vim", map[string]string{"cwd": "/home/u", "fd/0": "/dev/pts/0", "fd/3": "/workspace/notes.txt"})
	p.proc(13, "near", map[string]string{"fd/3": "/workspace2/notes.txt", "fd/4": "socket:[123]", "fd/5": "/workspacex",
		"fd/6": "anon_inode:[eventfd]", "fd/7": "/", "fd/8": "/workspace (deleted)"})
	p.proc(14, "python3", map[string]string{"maps": heap + anon +
		"7f1000000000-7f1000001000 r-xp 00001000 00:2d 1234                       /workspace/lib/lib foo.so\n"})
	p.proc(15, "mapsnear", map[string]string{"maps": heap + anon +
		"7f1000000000-7f1000001000 r-xp 00001000 00:2d 1234                       /workspace2/lib.so\n" +
		"7f2000000000-7f2000001000 r--p 00000000 fe:01 99                         /usr/lib/workspace/x.so\n"})
	p.proc(16, "chrooted", map[string]string{"root": "/workspace/jail"})
	p.proc(17, "tool", map[string]string{"exe": "/workspace/bin/tool (deleted)"})
	p.proc(18, "gone-dir", map[string]string{"cwd": "/workspace/tmp (deleted)"})
	p.proc(19, "agent", map[string]string{"cwd": "/workspace"}) // self
	p.proc(20, "", map[string]string{"cwd": "/workspace"})      // ended after its cwd was read
	p.proc(21, "vanishing", map[string]string{"cwd": "/workspace"})
	p.proc(22, "other", map[string]string{"cwd": "/", "fd/1": "pipe:[5]"})
	for _, n := range []string{"net", "0023", "24x", "-1"} {
		p.mkdir(n)
	}
	var seen []int
	users, more := shareUsers(p.root, "/workspace", 19, func(pid int) {
		seen = append(seen, pid)
		if pid == 21 {
			os.RemoveAll(filepath.Join(p.root, "21"))
		}
	})
	want := []agentcall.ShareUser{{PID: 10, Comm: "bash"}, {PID: 12, Comm: "vim"}, {PID: 14, Comm: "python3"},
		{PID: 16, Comm: "chrooted"}, {PID: 17, Comm: "tool"}, {PID: 18, Comm: "gone-dir"}}
	if !reflect.DeepEqual(users, want) || more != 0 {
		t.Errorf("users %+v, more %d; want %+v", users, more, want)
	}
	if !reflect.DeepEqual(seen, []int{10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22}) {
		t.Errorf("looked at %v: in pid order, every process but the agent, no other name", seen)
	}
	// The share under a path with the other's prefix finds the other's users.
	users, _ = shareUsers(p.root, "/workspace2", 19, nil)
	if len(users) != 3 || users[0].PID != 11 || users[1].PID != 13 || users[2].PID != 15 {
		t.Errorf("users of /workspace2: %+v; want 11, 13 and 15", users)
	}
}

// Past MaxShareUsers the users are counted, not listed: the lowest pids
// are listed.
func TestShareUsersBounded(t *testing.T) {
	p := newFakeProc(t)
	for pid := 100; pid < 140; pid++ {
		p.proc(pid, "sh", map[string]string{"cwd": "/workspace/p" + strconv.Itoa(pid)})
	}
	users, more := shareUsers(p.root, "/workspace", 1, nil)
	if len(users) != agentcall.MaxShareUsers || more != 40-agentcall.MaxShareUsers || users[0].PID != 100 || users[15].PID != 115 {
		t.Errorf("%d users (%+v), more %d; want 16 and 24", len(users), users, more)
	}
}

// A comm longer than the kernel writes, and one with bytes a terminal
// would act on, is passed on cut (the host makes it printable).
func TestShareUsersComm(t *testing.T) {
	p := newFakeProc(t)
	p.proc(5, strings.Repeat("c", 5000), map[string]string{"cwd": "/workspace"})
	users, _ := shareUsers(p.root, "/workspace", 1, nil)
	if len(users) != 1 || len(users[0].Comm) != maxCommBytes {
		t.Errorf("users %+v", users)
	}
}

func TestShareUsersNoProc(t *testing.T) {
	if users, more := shareUsers(filepath.Join(t.TempDir(), "none"), "/workspace", 1, nil); users != nil || more != 0 {
		t.Errorf("%+v, %d", users, more)
	}
}

func TestLookMounts(t *testing.T) {
	p := newFakeProc(t)
	p.mountinfo(
		"22 1 8:1 / / rw,relatime - ext4 /dev/vda1 rw",
		"garbage line",
		"30 22 0:40 / /work\\040space rw - tmpfs my\\054src rw",
		wsMount,
		ws2Mount,
		"38 36 0:47 / /workspace rw - tmpfs tmpfs rw", // stacked: this one is on top
		"39 36 0:48 / /workspace/sub/dir rw shared:1 master:2 - tmpfs tmpfs rw",
		"40 22 0:49 / /short - -", // too few fields after the separator
	)
	mi := filepath.Join(p.root, "self", "mountinfo")
	for _, c := range []struct {
		dir  string
		want mountLook
	}{
		{"/workspace", mountLook{top: mountEntry{"/workspace", "tmpfs", "tmpfs"}, mounted: true, below: "/workspace/sub/dir"}},
		{"/workspace2", mountLook{top: mountEntry{"/workspace2", "tmpfs", "tmpfs"}, mounted: true}},
		{"/work space", mountLook{top: mountEntry{"/work space", "tmpfs", "my,src"}, mounted: true}},
		{"/workspace/sub", mountLook{below: "/workspace/sub/dir"}},
		{"/short", mountLook{}},
		{"/nothing", mountLook{}},
	} {
		got, err := lookMounts(mi, c.dir)
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.dir, got, err, c.want)
		}
	}
	if _, err := lookMounts(filepath.Join(p.root, "none"), "/workspace"); err == nil {
		t.Error("no mountinfo file: no error")
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`: "/a b", `/a\134b`: `/a\b`, `/a\011\012`: "/a\t\n", `/a\04`: `/a\04`, `/a\089`: `/a\089`, `\`: `\`, "/plain": "/plain",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("%q: %q; want %q", in, got, want)
		}
	}
}
