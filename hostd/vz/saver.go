package vz

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
)

var _ machine.Saver = (*VM)(nil)

// saveGuest is a guest the framework can save: vz has the calls on Apple
// silicon only (save_arm64_darwin.go), so an Intel Mac's guest lacks them.
type saveGuest interface {
	Save(path string) error    // saveMachineStateToURL
	Restore(path string) error // restoreMachineStateFromURL
	// Savable is the framework's verdict on the VM's configuration
	// (validateSaveRestoreSupport).
	Savable() (bool, error)
}

// saveHost is a host that can tell whether this binary and this Mac have
// the framework's save calls (vz's own check, run through a harmless
// macOS 14 constructor): an oldSDKError when the binary was built with an
// SDK older than macOS 14.
type saveHost interface {
	saveProbe() error
}

// oldSDKError is saveProbe's vz.ErrBuildTargetOSVersion.
type oldSDKError struct{ error }

func (e oldSDKError) Unwrap() error { return e.error }

// errNoSaveCalls is a Mac whose framework has no save calls in vz.
var errNoSaveCalls = errors.New("this Mac cannot save a VM: Virtualization.framework saves VMs on Apple silicon only; `cowork stop` the instance instead")

// savable says whether this Mac can save g, checking in an order that
// never reaches an API the Mac or this binary lacks: vz's
// ValidateSaveRestoreSupport raises an Objective-C exception (ending hostd
// and the guest) on macOS 13 or in a binary built with an older SDK, so
// the version comes first, then vz's own check of both, then the
// framework's verdict on the configuration.
func (v *VM) savable(g guest, version string) (saveGuest, error) {
	sg, ok := g.(saveGuest)
	sh, hok := v.host.(saveHost)
	if !ok || !hok {
		return nil, errNoSaveCalls
	}
	if err := checkSaveMacOS(version); err != nil {
		return nil, err
	}
	if err := sh.saveProbe(); err != nil {
		return nil, explainSaveProbe(err, errors.As(err, new(oldSDKError)), version)
	}
	ok, err := sg.Savable()
	return sg, checkSavable(ok, err, version)
}

// DetachShare leaves the share where it is (machine.Saver): a vz directory
// share is part of the VM's configuration, which cannot change once the
// VM is made, and there is nothing to unplug. Whether the framework saves
// a VM with one attached is its to say (macOS 14 does not, 15.5 is
// reported to: see shareLimit): when it says no, DetachShare says so,
// and hostd gives the guest its mount back and runs it on. Any other
// refusal is Save's to report. Nothing is ejected: the guest keeps its device.
func (v *VM) DetachShare(context.Context, func(context.Context) error) error {
	g := v.guest()
	if g == nil {
		return errors.New("the VM is not started")
	}
	version, err := v.macOS()
	if err != nil {
		return err
	}
	_, err = v.savable(g, version)
	return shareRefusal(err)
}

// AttachShare does nothing: the share never left (see DetachShare), and
// the guest only mounts it again.
func (v *VM) AttachShare(context.Context) error { return nil }

// Save pauses the guest and has the framework write it to dir/vm.state
// (machine.Saver), then flushes the file and dir. The guest stays paused.
// When anything fails the file is removed and the guest runs on.
func (v *VM) Save(ctx context.Context, dir string) (_ *machine.Saved, err error) {
	g := v.guest()
	if s := v.State(); s != machine.Running || g == nil {
		return nil, fmt.Errorf("cannot save a VM that is %s", s)
	}
	version, err := v.macOS()
	if err != nil {
		return nil, err
	}
	sg, err := v.savable(g, version)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, StateFile)
	if err := checkNoState(path); err != nil {
		return nil, err
	}
	if err := g.Pause(); err != nil {
		return nil, fmt.Errorf("pause the guest: %w", Explain(err))
	}
	v.SetState(machine.Paused)
	defer func() {
		if err == nil {
			return
		}
		os.Remove(path)
		if rerr := g.Resume(); rerr != nil {
			err = fmt.Errorf("%w; and the guest did not run on: %w", err, rerr)
			return
		}
		v.SetState(machine.Running)
	}()
	began := time.Now()
	if err := sg.Save(path); err != nil {
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
	version, err := v.macOS()
	if err != nil {
		v.Fail(err)
		return err
	}
	began := time.Now()
	_, err = v.launch(func(g guest) error {
		sg, err := v.savable(g, version)
		if err != nil {
			return err
		}
		if err := sg.Restore(path); err != nil {
			if g.CanStop() {
				_ = g.Stop()
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
	g := v.guest()
	if g == nil {
		return errors.New("the VM is not started")
	}
	if err := g.Resume(); err != nil {
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
	plan, err := v.newPlan()
	if err != nil {
		return machine.Identity{}, err
	}
	product, err := v.macOS()
	if err != nil {
		return machine.Identity{}, err
	}
	build, err := v.host.build()
	if err != nil {
		return machine.Identity{}, fmt.Errorf("read the macOS build (sysctl kern.osversion): %w", err)
	}
	return identity(product, build, plan, os.Stat)
}
