package guestagent

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// Bounds of a look at /proc: a guest with more processes, descriptors or
// mappings than these is not one cowork made, and the look must end.
// Past them a process is taken as not using the share; the kernel still
// refuses a plain unmount of a busy share (EBUSY), so a user missed here
// is not lost silently.
const (
	maxProcEntries = 1 << 16 // names read from /proc
	maxFDs         = 1 << 16 // descriptors looked at per process
	maxMapsLines   = 1 << 16 // lines of /proc/PID/maps per process
	maxCommBytes   = 64      // of /proc/PID/comm (the kernel keeps 16)
)

// shareUsers lists the processes of the /proc tree at procRoot, other than
// self, that use the tree mounted at dir: at most agentcall.MaxShareUsers
// of them, lowest pid first, and how many more there are. A process that
// ends during the look, or whose files cannot be read, is skipped.
func shareUsers(procRoot, dir string, self int, beforePid func(pid int)) (users []agentcall.ShareUser, more int) {
	for _, pid := range procPids(procRoot) {
		if pid == self {
			continue
		}
		if beforePid != nil {
			beforePid(pid)
		}
		pdir := filepath.Join(procRoot, strconv.Itoa(pid))
		if !usesDir(pdir, dir) {
			continue
		}
		comm, err := readComm(pdir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // it ended: it no longer holds the share
		}
		if len(users) < agentcall.MaxShareUsers {
			users = append(users, agentcall.ShareUser{PID: pid, Comm: comm})
		} else {
			more++
		}
	}
	return users, more
}

// procPids are the process ids in procRoot, at most maxProcEntries names
// read, in increasing order.
func procPids(procRoot string) []int {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(maxProcEntries)
	d.Close()
	var pids []int
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 && n == strconv.Itoa(pid) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// usesDir reports whether the process of /proc directory pdir has its
// working directory, root or executable, an open descriptor or a mapped
// file at or under dir. It reads links (what the kernel says each names)
// and never follows them: following one would touch the share, which may
// hang if its server is gone.
func usesDir(pdir, dir string) bool {
	for _, l := range []string{"cwd", "root", "exe"} {
		if t, err := os.Readlink(filepath.Join(pdir, l)); err == nil && underDir(t, dir) {
			return true
		}
	}
	fdDir := filepath.Join(pdir, "fd")
	if d, err := os.Open(fdDir); err == nil {
		fds, _ := d.Readdirnames(maxFDs)
		d.Close()
		for _, fd := range fds {
			if t, err := os.Readlink(filepath.Join(fdDir, fd)); err == nil && underDir(t, dir) {
				return true
			}
		}
	}
	return mapsUnder(filepath.Join(pdir, "maps"), dir)
}

// mapsUnder reports whether a line of the maps file names a file at or
// under dir. A line is "address perms offset dev inode pathname", the
// pathname (which may hold spaces) absent for anonymous memory.
func mapsUnder(maps, dir string) bool {
	f, err := os.Open(maps)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10) // a longer line ends the look
	for n := 0; n < maxMapsLines && sc.Scan(); n++ {
		line := sc.Text()
		for range 5 {
			line = strings.TrimLeft(line, " ")
			i := strings.IndexByte(line, ' ')
			if i < 0 {
				line = ""
				break
			}
			line = line[i:]
		}
		if underDir(strings.TrimLeft(line, " "), dir) {
			return true
		}
	}
	return false
}

// underDir reports whether p, a path the kernel printed, is dir or under
// it: "/workspace2" is not under "/workspace". Links that are no path
// ("socket:[1]", "pipe:[2]", "anon_inode:[eventfd]") never are. A deleted
// file under dir ("/workspace/a (deleted)") still is; "/workspace
// (deleted)" is a file in / (a mount point cannot be deleted).
func underDir(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// readComm is the process's command name, one line of at most
// maxCommBytes.
func readComm(pdir string) (string, error) {
	f, err := os.Open(filepath.Join(pdir, "comm"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCommBytes+1))
	if err != nil {
		return "", err
	}
	s := strings.TrimSuffix(string(b), "\n")
	if len(s) > maxCommBytes {
		s = s[:maxCommBytes]
	}
	return s, nil
}

// mountEntry is one line of a mountinfo file.
type mountEntry struct {
	point, fstype, source string
}

// mountLook is what a mountinfo file says about a directory.
type mountLook struct {
	top     mountEntry // the mount on top at the directory (the last of a stack)
	mounted bool       // something is mounted at the directory
	below   string     // a mount point under the directory, "" when none
}

// maxMountinfo bounds what is read of a mountinfo file.
const maxMountinfo = 16 << 20

// lookMounts reads the mountinfo file at path (proc(5)) for what is
// mounted at dir and under it.
func lookMounts(path, dir string) (mountLook, error) {
	var look mountLook
	err := eachMount(path, func(m mountEntry) bool {
		switch {
		case m.point == dir:
			look.top, look.mounted = m, true
		case look.below == "" && underDir(m.point, dir):
			look.below = m.point
		}
		return true
	})
	return look, err
}

// virtiofsMounted is the first virtiofs mount point in the mountinfo
// file at path, "" when there is none.
func virtiofsMounted(path string) (string, error) {
	point := ""
	err := eachMount(path, func(m mountEntry) bool {
		if m.fstype == "virtiofs" {
			point = m.point
		}
		return point == ""
	})
	return point, err
}

// eachMount calls fn with each mount of the mountinfo file at path, in
// its order, until fn says stop.
func eachMount(path string, fn func(mountEntry) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxMountinfo))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source superoptions
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+3 {
			continue
		}
		if !fn(mountEntry{point: unescapeMount(f[4]), fstype: f[sep+1], source: unescapeMount(f[sep+2])}) {
			return nil
		}
	}
	return sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space,
// \011, \012, \134).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
