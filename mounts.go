package cowork

import (
	"errors"
	"fmt"
	"os"

	"github.com/coworkhq/cowork/hostd/instance"
)

// Mount is a host folder shared into the guest besides the workspace:
// HOST at GUEST, read-only when ReadOnly (enforced by the host).
type Mount = instance.Mount

// InvalidMountError is a mount that cannot be made; nothing changed.
type InvalidMountError struct{ Err error }

func (e *InvalidMountError) Error() string { return e.Err.Error() }
func (e *InvalidMountError) Unwrap() error { return e.Err }

// Mounts are the instance's shared folders, the workspace first: what
// the guest mounts at its next start, or has mounted while it runs.
func (i *Instance) Mounts() []Mount {
	return append([]Mount{{Host: i.Config.Workspace, Guest: instance.GuestWorkspace}}, i.Config.Mounts...)
}

// CheckMounts says whether mounts could be the instance's (SetMounts):
// an *InvalidMountError naming each problem, or nil.
func (i *Instance) CheckMounts(mounts []Mount) error {
	c := *i.Config
	c.Mounts = mounts
	if err := c.ValidateMounts(); err != nil {
		return &InvalidMountError{Err: err}
	}
	home, err := instance.Home()
	if err != nil {
		return err
	}
	if err := c.CheckMountHosts(home); err != nil {
		return &InvalidMountError{Err: err}
	}
	return nil
}

// SetMounts replaces the instance's mounts besides the workspace, kept in
// its config for every later start (nil: none). Not while it runs: a VM's
// devices are fixed while it runs. A suspended instance's saved guest was
// saved with the mounts it had: it is refused unless discardSaved, which
// discards the saved state (as `cowork start --cold` does) under the same
// lock, after the new mounts are saved; it reports whether it did. Bad
// mounts are an *InvalidMountError; then nothing changed.
func (i *Instance) SetMounts(mounts []Mount, discardSaved bool) (discarded bool, err error) {
	if err := i.CheckMounts(mounts); err != nil {
		return false, err
	}
	c := *i.Config
	c.Mounts = mounts
	lock, err := instance.TryLock(i.Paths)
	if errors.Is(err, instance.ErrRunning) {
		return false, fmt.Errorf("%s is running; its mounts change when it is stopped (`cowork stop%s` first)", i.Name, instance.NameFlag(i.Name))
	}
	if err != nil {
		return false, err
	}
	defer lock.Release()
	saved := i.Saved() != nil
	if saved && !discardSaved {
		return false, fmt.Errorf("%s is suspended, its guest saved with the mounts it had; `cowork start --cold%s --mount …` discards the saved state and starts it with the new ones", i.Name, instance.NameFlag(i.Name))
	}
	if err := c.Save(i.Paths.Dir()); err != nil {
		return false, err
	}
	i.Config.Mounts = mounts
	if saved {
		// A state that stayed (the removal failed) no longer fits the
		// devices: the next start sets it aside and boots cold.
		if err := os.RemoveAll(i.Paths.Suspend()); err != nil {
			return false, fmt.Errorf("the mounts are saved, but %s's saved state is not discarded: %w", i.Name, err)
		}
		return true, nil
	}
	return false, nil
}

// SetSSHAgent lends the guest the host's SSH agent (the one at
// SSH_AUTH_SOCK where the instance starts) from its next start on, or
// stops lending it. Not while it runs. A suspended guest that was lent it
// keeps its socket until it boots cold: stopping is refused then, unless
// discardSaved, which discards the saved state (as `cowork start --cold`
// does) under the same lock; it reports whether it did.
func (i *Instance) SetSSHAgent(on, discardSaved bool) (discarded bool, err error) {
	if i.Config.SSHAgent == on {
		return false, nil
	}
	lock, err := instance.TryLock(i.Paths)
	if errors.Is(err, instance.ErrRunning) {
		return false, fmt.Errorf("%s is running; lending its guest the SSH agent changes when it is stopped (`cowork stop%s` first)", i.Name, instance.NameFlag(i.Name))
	}
	if err != nil {
		return false, err
	}
	defer lock.Release()
	saved := !on && i.Saved() != nil
	if saved && !discardSaved {
		return false, fmt.Errorf("%s is suspended, its guest holding the lent agent's socket; `cowork start --cold%s --no-ssh-agent` discards the saved state and starts it without", i.Name, instance.NameFlag(i.Name))
	}
	c := *i.Config
	c.SSHAgent = on
	if err := c.Save(i.Paths.Dir()); err != nil {
		return false, err
	}
	i.Config.SSHAgent = on
	if saved {
		if err := os.RemoveAll(i.Paths.Suspend()); err != nil {
			return false, fmt.Errorf("lending the SSH agent is stopped, but %s's saved state is not discarded: %w", i.Name, err)
		}
		return true, nil
	}
	return false, nil
}
