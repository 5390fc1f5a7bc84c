package vz

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/dirsync"
)

// How a vz guest is saved (machine.Saver): Virtualization.framework
// writes the paused VM, its memory and devices, into one file of its own
// format, encrypted with a key tied to this Mac (VZVirtualMachine's
// saveMachineStateToURL, macOS 14+), and loads it into a VM built from the
// same configuration (restoreMachineStateFromURL). The decisions around
// those calls are made here and in saver.go, in portable code;
// save_arm64_darwin.go only calls.

// StateFile is the saved guest's one file in its folder.
const StateFile = "vm.state"

// SaveMacOS is the first macOS whose Virtualization.framework saves and
// restores a VM.
const SaveMacOS = 14

// maxStateOverhead bounds what the state file may hold beyond the guest's
// memory: the devices' state is small, and the framework's format is
// unknown beyond that (a Mac measures it), so the bound is generous; it
// only keeps the framework from being handed a file hostd cannot have
// written (hostd's manifest has checked its exact size already).
const maxStateOverhead = 1 << 30

// checkSaveMacOS refuses a macOS that cannot save a VM. It must run before
// any of vz's save calls: on macOS 13, vz's ValidateSaveRestoreSupport
// raises an Objective-C exception (it has no version check of its own,
// unlike SaveMachineStateToPath), which would end hostd and the guest.
func checkSaveMacOS(version string) error {
	major, err := macOSMajor(version)
	if err != nil {
		return err
	}
	if major < SaveMacOS {
		return fmt.Errorf("this Mac (macOS %s) cannot save a VM; macOS %d or newer can: update macOS, or `cowork stop` the instance instead", version, SaveMacOS)
	}
	return nil
}

// explainSaveProbe turns the error of vz's own check for macOS 14 APIs
// (run through a harmless macOS 14 constructor) into the user's next
// step. builtOld is vz.ErrBuildTargetOSVersion: this binary was built
// with an SDK older than macOS 14, so the framework's save calls are
// compiled out and would raise an exception.
func explainSaveProbe(err error, builtOld bool, version string) error {
	if err == nil {
		return nil
	}
	if builtOld {
		return fmt.Errorf("this cowork was built with a macOS SDK older than %d and cannot save a VM: rebuild it with Xcode 15 or newer (`make`) (vz: %v)", SaveMacOS, err)
	}
	return fmt.Errorf("this Mac (macOS %s) cannot save a VM; macOS %d or newer can (vz: %v)", version, SaveMacOS, err)
}

// checkSavable reads what VZVirtualMachineConfiguration's
// validateSaveRestoreSupport says of the VM's configuration.
func checkSavable(ok bool, err error, version string) error {
	switch {
	case err != nil:
		if limit := shareLimit(err, version); limit != nil {
			return limit
		}
		return fmt.Errorf("this Mac's Virtualization.framework (macOS %s) cannot save this VM: %w", version, Explain(err))
	case !ok:
		return fmt.Errorf("this Mac's Virtualization.framework (macOS %s) says it cannot save this VM, without saying why (validateSaveRestoreSupport returned false and no error); `cowork stop` the instance instead", version)
	}
	return nil
}

// shareLimitError is a framework that cannot save a VM with a shared
// directory: macOS 14's refuses one ("Unsupported directory sharing device
// in configuration", tart #623/#1081), macOS 15.5's saves and restores one
// (tart #1082). A vz directory share cannot be unplugged from a running VM
// (it is part of the configuration, fixed once the VM is made; vz has no
// hot-plug), so such a Mac cannot suspend a cowork guest at all.
type shareLimitError struct {
	version string
	err     error
}

func (e *shareLimitError) Error() string {
	return fmt.Sprintf("this Mac's Virtualization.framework (macOS %s) cannot save a VM with a shared directory, and the workspace share cannot be unplugged from a running VM; newer macOS (15.5 is reported to) saves one: update macOS, or `cowork stop` the instance instead (vz: %v)", e.version, e.err)
}

func (e *shareLimitError) Unwrap() error { return e.err }

// shareLimit is a *shareLimitError when err, validateSaveRestoreSupport's,
// is about the directory share; nil when it is about something else.
func shareLimit(err error, version string) error {
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "directory sharing") {
		return nil
	}
	return &shareLimitError{version: version, err: err}
}

// shareRefusal is what DetachShare reports of a savability check: the
// share's limit only. Any other refusal is Save's to report, after the
// share, which never leaves the VM, was "unplugged" (a no-op).
func shareRefusal(err error) error {
	var limit *shareLimitError
	if errors.As(err, &limit) {
		return err
	}
	return nil
}

// checkRestore checks a saved guest before the framework loads it: saved
// with this VM's memory, and its file one Save can have written. It
// returns the file's path.
func checkRestore(s *machine.Saved, memory int64) (string, error) {
	if s.Memory != memory {
		return "", fmt.Errorf("the saved guest had %d MiB of memory, this VM %d MiB", s.Memory>>20, memory>>20)
	}
	path := filepath.Join(s.Dir, StateFile)
	return path, checkStateFile(path, memory)
}

// checkNoState refuses to save over a file: Save removes the state file
// when the save fails, and must never remove one it did not make.
func checkNoState(path string) error {
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		if err == nil {
			err = os.ErrExist
		}
		return fmt.Errorf("the saved guest's %s: %w", path, err)
	}
	return nil
}

// checkStateFile checks the saved guest's file before the framework is
// given its path: a regular file, not a symlink, of a size a guest of
// memory bytes can have been saved in. The framework opens the path
// itself (it takes a URL, not a descriptor); the folder is hostd's own,
// 0700 in the instance's directory, where the guest cannot write.
func checkStateFile(path string, memory int64) error {
	st, err := os.Lstat(path)
	switch {
	case err != nil:
		return fmt.Errorf("the saved guest's %s: %w", filepath.Base(path), err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("the saved guest's %s is not a regular file", path)
	case st.Size() < 1 || st.Size() > memory+maxStateOverhead:
		return fmt.Errorf("the saved guest's %s is %d bytes, want 1 to %d: not a guest this VM saved", path, st.Size(), memory+maxStateOverhead)
	}
	return nil
}

// syncSaved flushes the file the framework wrote and its folder (on macOS
// File.Sync is F_FULLFSYNC: down to the disk's media), so that the
// manifest hostd writes next never names a state a power cut could lose.
func syncSaved(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("the saved guest's %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return fmt.Errorf("flush %s: %w", path, err)
	}
	return dirsync.Sync(filepath.Dir(path))
}
