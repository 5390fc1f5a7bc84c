// Package dirsync flushes a directory's entries to disk: after a file is
// made, renamed or removed in it, its new name survives a power cut only
// once the directory itself is synced.
package dirsync

import (
	"fmt"
	"os"
)

// Sync flushes dir's entries.
func Sync(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", dir, err)
	}
	return nil
}
