package vz

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/hostd/machine"
)

var _ machine.Saver = (*VM)(nil)

// savable says whether this Mac can save a VM made from config, checking
// in an order that never reaches an API the Mac or this binary lacks: vz's
// ValidateSaveRestoreSupport raises an Objective-C exception (ending hostd
// and the guest) on macOS 13 or in a binary built with an older SDK, so
// the version comes first, then vz's own check of both (through
// NewMacKeyboardConfiguration, a harmless macOS 14 constructor that runs
// it), then the framework's verdict on the configuration.
func savable(config *vz.VirtualMachineConfiguration, version string) error {
	if err := checkSaveMacOS(version); err != nil {
		return err
	}
	if _, err := vz.NewMacKeyboardConfiguration(); err != nil {
		return explainSaveProbe(err, errors.Is(err, vz.ErrBuildTargetOSVersion), version)
	}
	ok, err := config.ValidateSaveRestoreSupport()
	return checkSavable(ok, err, version)
}

// DetachShare leaves the share where it is (machine.Saver): a vz directory
// share is part of the VM's configuration, which cannot change once the
// VM is made, and there is nothing to unplug. Whether the framework saves
// a VM with one attached is its to say (macOS 14 does not, 15.5 is
// reported to: see shareLimit): when it says no, DetachShare says so,
// and hostd gives the guest its mount back and runs it on. Any other
// refusal is Save's to report.
func (v *VM) DetachShare(context.Context) error {
	if v.vm == nil {
		return errors.New("the VM is not started")
	}
	version, err := macOSVersion()
	if err != nil {
		return err
	}
	return shareRefusal(savable(v.config, version))
}

// AttachShare does nothing: the share never left (see DetachShare), and
// the guest only mounts it again.
func (v *VM) AttachShare(context.Context) error { return nil }

// Save pauses the guest and has the framework write it to dir/vm.state
// (machine.Saver), then flushes the file and dir. The guest stays paused.
// When anything fails the file is removed and the guest runs on.
func (v *VM) Save(ctx context.Context, dir string) (_ *machine.Saved, err error) {
	if s := v.State(); s != machine.Running {
		return nil, fmt.Errorf("cannot save a VM that is %s", s)
	}
	version, err := macOSVersion()
	if err != nil {
		return nil, err
	}
	if err := savable(v.config, version); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, StateFile)
	if err := checkNoState(path); err != nil {
		return nil, err
	}
	if err := v.vm.Pause(); err != nil {
		return nil, fmt.Errorf("pause the guest: %w", Explain(err))
	}
	v.SetState(machine.Paused)
	defer func() {
		if err == nil {
			return
		}
		os.Remove(path)
		if rerr := v.vm.Resume(); rerr != nil {
			err = fmt.Errorf("%w; and the guest did not run on: %w", err, rerr)
			return
		}
		v.SetState(machine.Running)
	}()
	began := time.Now()
	if err := v.vm.SaveMachineStateToPath(path); err != nil {
		return nil, fmt.Errorf("save the guest to %s: %w", path, Explain(err))
	}
	if err := syncSaved(path); err != nil {
		return nil, err
	}
	v.log.Info("saved the guest", "file", path, "took", time.Since(began))
	return &machine.Saved{Dir: dir, Memory: v.cfg.Memory, Files: []string{StateFile}}, nil
}

// Restore builds the VM from the Config, as Start does, and has the
// framework load the saved guest into it (machine.Saver), leaving it
// paused: Continue runs it. The file is checked first (checkRestore).
func (v *VM) Restore(ctx context.Context, s *machine.Saved) error {
	path, err := checkRestore(s, v.cfg.Memory)
	if err != nil {
		v.Fail(err)
		return err
	}
	version, err := macOSVersion()
	if err != nil {
		v.Fail(err)
		return err
	}
	began := time.Now()
	_, err = v.launch(func(m *vz.VirtualMachine, config *vz.VirtualMachineConfiguration) error {
		if err := savable(config, version); err != nil {
			return err
		}
		if err := m.RestoreMachineStateFromURL(path); err != nil {
			if m.CanStop() {
				_ = m.Stop()
			}
			return fmt.Errorf("restore the guest from %s: %w", path, Explain(err))
		}
		v.SetState(machine.Paused)
		return nil
	})
	if err != nil {
		return err
	}
	v.log.Info("restored the guest", "file", path, "took", time.Since(began))
	return nil
}

// Continue runs the paused guest on (machine.Saver).
func (v *VM) Continue(context.Context) error {
	if v.vm == nil {
		return errors.New("the VM is not started")
	}
	if err := v.vm.Resume(); err != nil {
		return fmt.Errorf("run the guest on: %w", Explain(err))
	}
	v.SetState(machine.Running)
	return nil
}

// Identity is what a guest saved by this VM depends on (machine.Saver):
// the framework's file, macOS's version and build, and a digest of the
// device layout (identity.go). It touches no descriptor: hostd asks it of
// a VM it has not started, to decide whether to resume.
func (v *VM) Identity(context.Context) (machine.Identity, error) {
	plan, err := newPlan(v.cfg)
	if err != nil {
		return machine.Identity{}, err
	}
	product, err := macOSVersion()
	if err != nil {
		return machine.Identity{}, err
	}
	build, err := unix.Sysctl("kern.osversion")
	if err != nil {
		return machine.Identity{}, fmt.Errorf("read the macOS build: %w", err)
	}
	return identity(product, build, plan, os.Stat)
}
