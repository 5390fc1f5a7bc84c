package initcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// checkWorkspace tells, before anything long runs, whether the workspace
// folder can be used: an existing folder, or one that can be made (its
// nearest existing parent is a folder this user may write in). Create
// makes it only after the disk, which can take minutes.
func checkWorkspace(ws string) error {
	st, err := os.Stat(ws)
	switch {
	case err == nil && st.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("--workspace %s is a file, not a folder; give a folder (it is made if missing)", ws)
	case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR): // a file on the way is found below
		return fmt.Errorf("--workspace %s: %w", ws, err)
	}
	parent := filepath.Dir(ws)
	for {
		st, err = os.Stat(parent)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || filepath.Dir(parent) == parent {
			break
		}
		parent = filepath.Dir(parent)
	}
	switch {
	case err != nil:
		return fmt.Errorf("--workspace %s cannot be made: %w", ws, err)
	case !st.IsDir():
		return fmt.Errorf("--workspace %s cannot be made: %s is a file; give another folder", ws, parent)
	case unix.Access(parent, unix.W_OK|unix.X_OK) != nil:
		return fmt.Errorf("--workspace %s cannot be made: you may not write in %s; give a folder you can write in, or make it first", ws, parent)
	}
	return nil
}
