package cowork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/savestate"
)

// Suspended is a guest Suspend saved: what it takes on disk, how long the
// suspend took.
type Suspended = controlwire.Suspended

// Suspend saves the running guest, its memory and devices, and stops the
// VM (CallSuspend); it returns once hostd is gone. force suspends even
// when guest processes use /workspace, which they then lose.
func (c *Client) Suspend(ctx context.Context, force bool) (*Suspended, error) {
	return c.api.Suspend(ctx, controlwire.SuspendRequest{Force: force})
}

// suspendGrace is how long past the suspend a caller waits for hostd to be
// gone.
const suspendGrace = 30 * time.Second

// Suspend saves the running instance's guest with its memory and stops
// it: the next Start resumes it where it was (see Client.Suspend). An
// instance that does not run is NotRunningError; a refused suspend leaves
// the guest running as it was.
func (i *Instance) Suspend(ctx context.Context, force bool) (*Suspended, error) {
	if err := i.LocalOnly(OpSuspend); err != nil {
		return nil, err
	}
	c, err := i.Dial()
	if errors.Is(err, ErrNotRunning) {
		return nil, NotRunningError(i.Name)
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sus, err := c.Suspend(ctx, force)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, suspendGrace)
	defer cancel()
	if err := WaitStopped(wctx, i.Paths); err != nil {
		return sus, fmt.Errorf("%s was saved, but its hostd did not exit: %w%s", i.Name, err, Diagnostics(i.Paths))
	}
	return sus, nil
}

// SavedState is a suspended instance's saved guest.
type SavedState struct {
	Saved time.Time
	// Bytes is what the state takes on disk.
	Bytes int64
}

// Saved is the guest Suspend saved, which the next Start resumes; nil
// when there is none. A state whose manifest cannot be read is reported
// as none: the start that finds it boots cold and says why.
func (i *Instance) Saved() *SavedState {
	dir := i.Paths.Suspend()
	m, err := savestate.Load(dir)
	if err != nil {
		return nil
	}
	return &SavedState{Saved: m.Saved, Bytes: savestate.Usage(dir)}
}

// DiscardSaved removes the stopped instance's saved guest, so that the
// next start boots cold; it reports whether there was one. A running
// instance is refused: its hostd owns the folder.
func (i *Instance) DiscardSaved() (bool, error) {
	lock, err := instance.TryLock(i.Paths)
	if errors.Is(err, instance.ErrRunning) {
		return false, fmt.Errorf("%s is running: it has no saved state to discard (`cowork stop%s` first, to boot it cold next time)", i.Name, instance.NameFlag(i.Name))
	}
	if err != nil {
		return false, err
	}
	defer lock.Release()
	if _, err := os.Lstat(i.Paths.Suspend()); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err := os.RemoveAll(i.Paths.Suspend()); err != nil {
		return false, fmt.Errorf("discard %s's saved state: %w", i.Name, err)
	}
	return true, nil
}

// suspendedError refuses what would change a suspended instance's disk
// under its saved memory.
func (i *Instance) suspendedError(what string) error {
	if i.Saved() == nil {
		return nil
	}
	return fmt.Errorf("%s is suspended: its saved memory needs its disk as it is, so it cannot %s; `cowork start%s` resumes it (then stop it), or `cowork start --cold%s` discards the saved state", i.Name, what, instance.NameFlag(i.Name), instance.NameFlag(i.Name))
}
