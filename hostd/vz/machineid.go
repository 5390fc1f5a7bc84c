package vz

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/coworkhq/cowork/internal/dirsync"
)

// machineID is the generic platform's identifier the guest saw before,
// from path (bounded by readMachineID), or a new one saved there when
// there is none. A file the framework cannot read as one (empty, cut
// short by a crash, edited) is replaced by a new identifier with a
// warning, rather than handed to vz: vz indexes the first byte of the
// data, so an empty file panicked hostd, and a corrupt one made a nil
// identifier. The guest then sees a new machine, as on a first boot.
//
// check is the framework's reading of the data; generate makes a new
// identifier and returns its data.
func machineID(path string, check func([]byte) error, generate func() ([]byte, error), log *slog.Logger) ([]byte, error) {
	data, err := readMachineID(path)
	if err != nil {
		return nil, fmt.Errorf("%w: remove it to give the guest a new one", err)
	}
	if data != nil {
		why := "it is empty"
		if len(data) > 0 {
			err := check(data)
			if err == nil {
				return data, nil
			}
			why = err.Error()
		}
		log.Warn("the machine identifier file is unusable; the guest gets a new one, as on its first boot", "file", path, "why", why)
	}
	data, err = generate()
	if err != nil {
		return nil, fmt.Errorf("make a machine identifier: %w", Explain(err))
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("make a machine identifier: Virtualization.framework gave an empty one; please report it with the instance's hostd.log")
	}
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("save the machine identifier: %w", err)
	}
	return data, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// folder, flushed and renamed over path, then flushes the folder: a crash
// leaves the old file or the new one, never an empty or partial one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("%w (is %s writable?)", err, dir)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return dirsync.Sync(dir)
}
