package reflink

import (
	"errors"

	"golang.org/x/sys/unix"
)

// File clones src to dst with clonefile(2) (APFS).
func File(src, dst string) error {
	err := unix.Clonefile(src, dst, unix.CLONE_NOFOLLOW)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EXDEV) {
		return errors.ErrUnsupported
	}
	return err
}
