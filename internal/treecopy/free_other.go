//go:build !unix

package treecopy

import (
	"errors"
	"io/fs"
)

// freeSpace cannot tell here: the disk's own "no space" error stops a copy.
func freeSpace(string) (int64, int64, error) { return 0, 0, errors.New("unknown") }

// umask: 022, the usual one, where there is none to read.
func umask() fs.FileMode { return 0o022 }
