package cowork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/snapshot"
)

// An instance's pool keeps throwaway clones ready for its next runs
// (throwaway.go): hot ones run, at the cost of their memory; warm ones are
// suspended, their saved memory on disk, and held by a standby hostd that
// has it loaded and paused (hostd/standby.go), at the cost of that memory
// and no CPU: a run wakes it in a fraction of a second. A warm clone whose
// standby ended (the host restarted) is held again by the next fill, or
// resumed from disk by its run, in under a second. Its settings are in
// the instance's pool.json; FillPool makes clones until the pool holds
// its size, one filler at a time (PoolLock).

// MaxPoolSize bounds a pool: each clone is a VM.
const MaxPoolSize = 8

// PoolSettings say what an instance's pool keeps ready.
type PoolSettings struct {
	Size int  `json:"size"`
	Hot  bool `json:"hot,omitempty"` // running clones, not suspended ones
	// Snapshot is the one to clone; "" for the instance's latest.
	Snapshot string `json:"snapshot,omitempty"`
}

// Kind is the state of the clones s keeps ready: PoolHot or PoolWarm.
func (s PoolSettings) Kind() string {
	if s.Hot {
		return PoolHot
	}
	return PoolWarm
}

// PoolSettings reads the instance's pool settings: a zero size when it
// has none.
func (i *Instance) PoolSettings() (PoolSettings, error) {
	var s PoolSettings
	b, err := os.ReadFile(i.Paths.Pool())
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil {
		return s, fmt.Errorf("read %s: %w; remove it to reset the pool", i.Paths.Pool(), err)
	}
	return s, nil
}

// SetPoolSettings saves s as the instance's pool settings.
func (i *Instance) SetPoolSettings(s PoolSettings) error {
	if err := i.LocalOnly(OpPool); err != nil {
		return err
	}
	if s.Size < 0 || s.Size > MaxPoolSize {
		return fmt.Errorf("pool size %d: want 0 to %d", s.Size, MaxPoolSize)
	}
	if i.Config.Throwaway != nil {
		return fmt.Errorf("%s is a throwaway clone: give its parent %s the pool", i.Name, i.Config.Throwaway.Parent)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return instance.WriteFileAtomic(i.Paths.Pool(), append(b, '\n'), 0o600)
}

// Pool states of a clone.
const (
	PoolHot    = ReadyHot
	PoolWarm   = ReadyWarm
	PoolBusy   = "busy"   // a run has it
	PoolMaking = "making" // a filler is making it ready
	PoolUsed   = "used"   // its run died: to delete
	PoolStale  = "stale"  // not running, no saved memory: a filler died making it
)

// PoolClone is one of an instance's throwaway clones.
type PoolClone struct {
	Name     string    `json:"name"`
	Snapshot string    `json:"snapshot"`
	State    string    `json:"state"`
	Created  time.Time `json:"created"`
}

// PoolClones lists the instance's throwaway clones, in the pool or in a
// run, with their states.
func (i *Instance) PoolClones() ([]PoolClone, error) {
	var out []PoolClone
	err := i.eachClone(func(c *Instance) bool {
		out = append(out, PoolClone{Name: c.Name, Snapshot: c.Config.Throwaway.Snapshot, State: peekState(c), Created: c.Config.Created})
		return true
	})
	return out, err
}

// eachClone calls fn with each throwaway clone of the instance until fn
// returns false.
func (i *Instance) eachClone(fn func(*Instance) bool) error {
	names, err := instance.List()
	if err != nil {
		return err
	}
	for _, n := range names {
		c, err := Open(n)
		if err != nil || c.Config.Throwaway == nil || c.Config.Throwaway.Parent != i.Name {
			continue
		}
		if !fn(c) {
			break
		}
	}
	return nil
}

// poolState says what c is; for a clone no one else holds (free, or a
// dead run's), it returns its claim's lock too, held.
func poolState(c *Instance) (string, *instance.Lock) {
	lock, err := claim(c, false)
	switch {
	case errors.Is(err, errUsed):
		// Its run died: claim saw it holding the lock, which is now the
		// reaper's (unless another took it meanwhile).
		lock, _ = instance.LockFile(c.Paths.Claim(), false)
		return PoolUsed, lock
	case errors.Is(err, instance.ErrLocked) && !claimed(c):
		return PoolMaking, nil
	case err != nil:
		return PoolBusy, nil
	case held(c):
		return PoolWarm, lock
	case c.Running():
		return PoolHot, lock
	case c.Saved() != nil:
		return PoolWarm, lock
	}
	return PoolStale, lock
}

// peekState is c's state, its claim's lock (if it got it) let go.
func peekState(c *Instance) string {
	st, lock := poolState(c)
	if lock != nil {
		lock.Release()
	}
	return st
}

// staleAge is how old a clone that is neither running nor suspended must
// be before it counts as a dead filler's: a filler makes it so for the
// moment between its boot's end and its suspend's.
const staleAge = 2 * time.Minute

// fits says whether the clone c is still what a run of the instance
// expects of snap: made from the snapshot of that name that is there now
// (not one since removed and taken again), with the instance's settings
// as they are (its network policy above all).
func (i *Instance) fits(c *Instance, snap string) bool {
	t := c.Config.Throwaway
	if t.Snapshot != snap || t.Settings != i.Config.SettingsDigest() {
		return false
	}
	s, err := snapshot.Load(i.Paths, snap)
	return err == nil && s.Created.Equal(t.Made)
}

// reapPool deletes the clones of runs that died, of fillers that died,
// and free ones that no longer fit the instance (fits); with all, also
// free clones of another snapshot than the pool's or of the other kind
// (hot or warm). It returns what it deleted.
func (i *Instance) reapPool(ctx context.Context, all bool) []string {
	want, snap := "", ""
	if all {
		s, _ := i.PoolSettings()
		want = s.Kind()
		snap, _ = i.throwawayBase(s.Snapshot, nil)
	}
	var gone []string
	_ = i.eachClone(func(c *Instance) bool {
		st, lock := poolState(c)
		free := lock != nil
		drop := st == PoolUsed || st == PoolStale && time.Since(c.Config.Created) > staleAge ||
			free && !i.fits(c, c.Config.Throwaway.Snapshot) ||
			all && free && (st != want || c.Config.Throwaway.Snapshot != snap)
		if drop && free && discardClone(ctx, c) == nil {
			gone = append(gone, c.Name)
		}
		if lock != nil {
			lock.Release()
		}
		return true
	})
	i.reapUnfinished()
	return gone
}

// reapUnfinished removes the folders of clones whose making died before
// their config was written: no claim held in them.
func (i *Instance) reapUnfinished() {
	home, err := instance.Home()
	if err != nil {
		return
	}
	prefix, _ := throwawayName(i.Name, maxCloneName)
	prefix = prefix[:len(prefix)-8]
	dirs, _ := filepath.Glob(filepath.Join(home, prefix+"*"))
	for _, d := range dirs {
		p := instance.Paths(d)
		if _, err := os.Lstat(p.Config()); err == nil {
			continue
		}
		if st, err := os.Lstat(d); err != nil || !st.IsDir() || time.Since(st.ModTime()) < staleAge {
			continue // a clone still being copied (its claim not yet taken, for a moment)
		}
		// A clone's folder has its claim before anything else; one with
		// neither claim nor emptiness is no clone's (an instance of the
		// user's being made, under a name like one).
		if _, err := os.Lstat(p.Claim()); err != nil {
			if entries, _ := os.ReadDir(d); len(entries) > 0 {
				continue
			}
		}
		if lock, err := claimIn(p, false); err == nil || errors.Is(err, errUsed) {
			if lock != nil {
				lock.Release()
			}
			// A clone cut short may have copied the parent's values.
			instance.ForgetSecrets(i.Config.Secrets, p)
			_ = os.RemoveAll(d)
		}
	}
}

// claimed says whether c's claim names a run.
func claimed(c *Instance) bool {
	st, err := os.Stat(c.Paths.Claim())
	return err == nil && st.Size() > 0
}

// makingWait bounds how long a run waits for a pool clone being made
// rather than make one of its own (whose boot would compete with it for
// the host's CPUs).
const makingWait = 2 * time.Minute

// claimOrWait is claimReady, waiting while the pool has a clone of snap
// being made and none ready.
func (i *Instance) claimOrWait(ctx context.Context, snap string) *Throwaway {
	deadline := time.Now().Add(makingWait)
	for {
		if t := i.claimReady(ctx, snap); t != nil {
			return t
		}
		if !i.making(snap) {
			// One finished between the two looks is ready now: a second
			// look takes it rather than making another.
			return i.claimReady(ctx, snap)
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// making says whether a filler is making a clone of snap.
func (i *Instance) making(snap string) bool {
	found := false
	_ = i.eachClone(func(c *Instance) bool {
		found = i.fits(c, snap) && peekState(c) == PoolMaking
		return !found
	})
	return found
}

// claimReady takes a ready clone of snap for a run, a hot one first; nil
// when the pool has none.
func (i *Instance) claimReady(ctx context.Context, snap string) *Throwaway {
	var found *Throwaway
	for _, want := range []string{PoolHot, PoolWarm} {
		_ = i.eachClone(func(c *Instance) bool {
			if !i.fits(c, snap) {
				return true
			}
			st, lock := poolState(c)
			if lock == nil {
				return true
			}
			if st != want || want == PoolHot && !readyNow(ctx, c.Name) {
				lock.Release()
				return true
			}
			lock.Release() // taken again for use: another run may win it
			if lock, err := claim(c, true); err == nil {
				found = &Throwaway{Instance: c, Parent: i, ID: runID(c.Name), Snapshot: snap, Ready: want, claim: lock}
				return false
			}
			return true
		})
		if found != nil {
			return found
		}
	}
	return nil
}

// runID is the id at the end of a throwaway clone's name.
func runID(name string) string {
	if len(name) > 8 {
		return name[len(name)-8:]
	}
	return name
}

// ErrPoolBusy is FillPool's answer when another process fills the pool.
var ErrPoolBusy = errors.New("another process is filling the pool")

// FillPool makes clones until the pool holds its size ready, reporting
// each one's boot to progress; it returns the names of those it made.
// Free clones that no longer fit the settings are deleted first. One
// filler at a time: ErrPoolBusy when another has the pool.
func (i *Instance) FillPool(ctx context.Context, progress func(clone string, ev *Event)) ([]string, error) {
	if err := i.LocalOnly(OpPool); err != nil {
		return nil, err
	}
	lock, err := instance.LockFile(i.Paths.PoolLock(), false)
	if errors.Is(err, instance.ErrLocked) {
		return nil, ErrPoolBusy
	}
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	// Read under the lock: a drain (or a delete) sets the size to 0
	// before it waits for this lock, so a filler it waits for sees it.
	s, err := i.PoolSettings()
	if err != nil || s.Size == 0 {
		return nil, err
	}
	if _, err := os.Stat(i.Paths.Config()); err != nil {
		return nil, fmt.Errorf("%s is gone: %w", i.Name, err) // deleted while this waited
	}
	snap, err := i.throwawayBase(s.Snapshot, nil)
	if err != nil {
		return nil, err
	}
	i.reapPool(ctx, true)
	if !s.Hot {
		i.holdWarm(ctx, snap, progress)
	}
	var made []string
	for i.readyClones(snap, s.Kind()) < s.Size {
		name, err := i.fillOne(ctx, snap, s.Hot, progress)
		if err == nil {
			// Read again: a drain may have emptied it meanwhile.
			s, err = i.PoolSettings()
		}
		if name != "" {
			made = append(made, name)
		}
		if err != nil {
			return made, err
		}
	}
	return made, nil
}

// readyClones counts the pool's ready clones of snap of kind (PoolHot or
// PoolWarm).
func (i *Instance) readyClones(snap, kind string) int {
	n := 0
	_ = i.eachClone(func(c *Instance) bool {
		if i.fits(c, snap) && peekState(c) == kind {
			n++
		}
		return true
	})
	return n
}

// fillOne makes one clone of snap ready for the pool: booted, and then
// suspended unless hot. A clone that fails is deleted.
func (i *Instance) fillOne(ctx context.Context, snap string, hot bool, progress func(string, *Event)) (string, error) {
	t, err := i.makeThrowaway(snap, false)
	if err != nil {
		return "", err
	}
	defer t.claim.Release()
	fail := func(err error) (string, error) {
		_ = discardClone(context.WithoutCancel(ctx), t.Instance)
		return "", fmt.Errorf("make pool clone %s of %s: %w", t.Name, i.Name, err)
	}
	err = t.Instance.Start(ctx, func(ev *Event) {
		if progress != nil {
			progress(t.Name, ev)
		}
	})
	if err != nil && !errors.Is(err, ErrAlreadyRunning) {
		return fail(err)
	}
	if !hot {
		if _, err := t.Instance.Suspend(ctx, false); err != nil {
			return fail(err)
		}
		t.Instance.hold(ctx, progress) // failing, still warm: a run resumes it from disk
	}
	return t.Name, nil
}

// holdWarm starts a standby for free warm clones of snap whose hold
// ended (the host restarted, the clone was stopped), up to the pool's
// size held at once: held, a run wakes one rather than resume it from
// disk. The settings are read again before each (a drain sets the size
// to 0).
func (i *Instance) holdWarm(ctx context.Context, snap string, progress func(string, *Event)) {
	n := 0
	_ = i.eachClone(func(c *Instance) bool {
		if i.fits(c, snap) && held(c) {
			n++
		}
		return true
	})
	_ = i.eachClone(func(c *Instance) bool {
		s, err := i.PoolSettings()
		if ctx.Err() != nil || err != nil || s.Hot || n >= s.Size {
			return false
		}
		if !i.fits(c, snap) || c.Running() || c.Saved() == nil {
			return true
		}
		lock, err := claim(c, false) // kept from runs while its hostd starts
		if err != nil {
			return true
		}
		defer lock.Release()
		if c.hold(ctx, progress) {
			n++
		}
		return true
	})
}

// held says whether c's hostd stands by with its saved guest, or is
// loading it to: the state is retired only when a run wakes it.
func held(c *Instance) bool { return c.Running() && c.Saved() != nil }

// hold is standBy, a failure told to progress as a note: the clone stays
// suspended on disk. It says whether the clone is held.
func (i *Instance) hold(ctx context.Context, progress func(string, *Event)) bool {
	err := i.standBy(ctx)
	if err != nil && progress != nil && ctx.Err() == nil {
		progress(i.Name, &Event{Phase: controlwire.PhaseNote, Message: "the clone stays suspended on disk; holding it loaded failed", Error: err.Error()})
	}
	return err == nil
}

// heldOrWoken says whether c's hostd holds its saved guest loaded and
// paused, for a run to wake, or has been woken already (a start of the
// clone by hand came first): either way its load is done.
func heldOrWoken(c *Instance) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := c.Dial()
	if err != nil {
		return false
	}
	defer cl.Close()
	st, err := cl.Status(ctx)
	return err == nil && (st.State == StateStandby || st.Ready)
}

// standbyWait bounds standBy: a load that takes longer is stuck.
const standbyWait = 2 * time.Minute

// standBy launches the suspended instance's hostd with --standby, and
// waits until it holds the saved guest loaded and paused. On error the
// hostd is stopped: the instance is as it was, suspended on disk.
func (i *Instance) standBy(ctx context.Context) (err error) {
	// A pool's clones are local instances (localOnly refuses a pool to
	// one on a cluster): their daemon is cowork-hostd.
	exe, err := HostdBinary()
	if err != nil {
		return err
	}
	h, err := launchChild(exe, i.Config, "--standby")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, standbyWait)
	defer cancel()
	defer func() {
		if err != nil {
			_ = h.abandon(i.Name, i.Paths)
			err = fmt.Errorf("hold %s loaded: %w%s", i.Name, err, Diagnostics(i.Paths))
		}
	}()
	if err := waitForControl(ctx, i.Paths, h); err != nil {
		return err
	}
	for !heldOrWoken(i) {
		select {
		case <-h.done:
			return fmt.Errorf("its hostd ended (%v)", h.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// PoolFilling says whether a filler is at work on the pool (DrainPool
// waits for it to finish the clone it is making).
func (i *Instance) PoolFilling() bool {
	lock, err := instance.LockFile(i.Paths.PoolLock(), false)
	if err != nil {
		return errors.Is(err, instance.ErrLocked)
	}
	lock.Release()
	return false
}

// DrainPool sets the pool's size to 0 and deletes its free clones (those
// in a run are deleted by their run); it returns their names.
func (i *Instance) DrainPool(ctx context.Context) ([]string, error) {
	s, err := i.PoolSettings()
	if err != nil {
		return nil, err
	}
	s.Size = 0
	if err := i.SetPoolSettings(s); err != nil {
		return nil, err
	}
	lock, err := instance.LockFile(i.Paths.PoolLock(), true)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	var gone []string
	err = i.eachClone(func(c *Instance) bool {
		st, l := poolState(c)
		// No filler makes one while this holds the pool lock: "making"
		// is someone's look for a moment (a claimer's, its hostd's).
		for try := 0; st == PoolMaking && try < 20; try++ {
			time.Sleep(50 * time.Millisecond)
			st, l = poolState(c)
		}
		if l == nil {
			return true // a run's: it deletes it
		}
		if discardClone(ctx, c) == nil {
			gone = append(gone, c.Name)
		}
		l.Release()
		return true
	})
	i.reapUnfinished()
	return gone, err
}
