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
	if err := i.LocalOnly(OpMount); err != nil {
		return false, err
	}
	if err := i.CheckMounts(mounts); err != nil {
		return false, err
	}
	return i.changeStopped(stoppedChange{
		what:      "its mounts change",
		suspended: "its guest saved with the mounts it had; `cowork start --cold%s --mount …` discards the saved state and starts it with the new ones",
		touches:   true, discard: discardSaved,
		apply: func(c *instance.Config) { c.Mounts = mounts },
	})
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
	if on {
		if err := i.LocalOnly(OpSSHAgent); err != nil {
			return false, err
		}
	}
	return i.changeStopped(stoppedChange{
		what:      "lending its guest the SSH agent changes",
		suspended: "its guest holding the lent agent's socket; `cowork start --cold%s --no-ssh-agent` discards the saved state and starts it without",
		touches:   !on, discard: discardSaved,
		apply: func(c *instance.Config) { c.SSHAgent = on },
	})
}

// stoppedChange is a change to the config of a stopped instance.
type stoppedChange struct {
	what      string // "its mounts change", for "… when it is stopped"
	suspended string // why a saved guest refuses it, and what to do (%s: the --name flag)
	touches   bool   // a saved guest does not fit the change
	discard   bool   // discard such a saved guest instead of refusing
	apply     func(*instance.Config)
}

// changeStopped applies ch to the config of the instance, which must not
// run, under its lock; a saved guest the change does not fit is refused,
// or discarded after the config is saved (a state that stayed, the
// removal failing, would be set aside by the next start). It reports
// whether it discarded one.
func (i *Instance) changeStopped(ch stoppedChange) (discarded bool, err error) {
	lock, err := instance.TryLock(i.Paths)
	if errors.Is(err, instance.ErrRunning) {
		return false, fmt.Errorf("%s is running; %s when it is stopped (`cowork stop%s` first)", i.Name, ch.what, instance.NameFlag(i.Name))
	}
	if err != nil {
		return false, err
	}
	defer lock.Release()
	saved := ch.touches && i.Saved() != nil
	if saved && !ch.discard {
		return false, fmt.Errorf("%s is suspended, "+ch.suspended, i.Name, instance.NameFlag(i.Name))
	}
	c, err := instance.UpdateConfig(i.Name, func(c *instance.Config) error { ch.apply(c); return nil })
	if err != nil {
		return false, err
	}
	*i.Config = *c
	if !saved {
		return false, nil
	}
	if err := os.RemoveAll(i.Paths.Suspend()); err != nil {
		return false, fmt.Errorf("the change is saved, but %s's saved state is not discarded: %w", i.Name, err)
	}
	return true, nil
}
