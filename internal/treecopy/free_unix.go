//go:build unix

package treecopy

import (
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// freeSpace is the bytes and inodes free to an unprivileged user on dir's
// file system (inodes -1 when it does not count them).
func freeSpace(dir string) (bytes, inodes int64, err error) {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return 0, 0, err
	}
	inodes = -1
	if s.Files > 0 {
		inodes = int64(s.Ffree)
	}
	return int64(s.Bavail) * int64(s.Bsize), inodes, nil
}

// umask is the process's file mode creation mask: from /proc where Linux
// tells it, else by setting it and back (which a file another goroutine
// makes meanwhile would see).
func umask() fs.FileMode {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return fs.FileMode(m)
				}
			}
		}
	}
	m := unix.Umask(0)
	unix.Umask(m)
	return fs.FileMode(m)
}
