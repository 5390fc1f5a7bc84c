package golden

import (
	"errors"

	"golang.org/x/sys/unix"
)

// reflinkFile clones src to dst with clonefile(2) (APFS).
func reflinkFile(src, dst string) error {
	err := unix.Clonefile(src, dst, unix.CLONE_NOFOLLOW)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EXDEV) {
		return errors.ErrUnsupported
	}
	return err
}
