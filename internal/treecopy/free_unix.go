//go:build unix

package treecopy

import "golang.org/x/sys/unix"

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
