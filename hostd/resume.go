package hostd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd/console"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/golden"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/dirsync"
)

// startOrResume starts the VM: from the guest `cowork suspend` saved when
// there is one this host can resume, else with a cold boot. A state that
// does not match (another QEMU, other settings, a host that restarted, a
// disk written since) or that fails to load is set aside with a note
// saying why, and the guest boots cold from its disk: nothing is lost
// that a power cut after the save would not lose. It reports whether the
// guest was resumed.
func (d *Daemon) startOrResume(ctx context.Context, mc machine.Config, con *console.Console) (bool, error) {
	vm, err := d.newMachine(mc, d.log)
	if err != nil {
		return false, err
	}
	saved, err := d.savedState(ctx, vm, mc)
	if d.standby {
		if err := d.holdOnly(ctx, vm, saved, err); err != nil {
			return false, err
		}
		con.CloseWriter()
		return true, nil
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return false, ctx.Err()
	case err != nil:
		d.rejectState(err)
	case saved != nil:
		err := d.resume(ctx, vm, saved)
		if err == nil {
			con.CloseWriter() // the VM holds its own copy
			return true, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		d.rejectState(fmt.Errorf("saved state refused: it did not load (%w); the instance cold-boots instead", err))
		if vm, err = d.newMachine(mc, d.log); err != nil { // that one has ended
			return false, err
		}
	}
	return false, d.startVM(ctx, vm, con)
}

// savedState is the saved guest vm is to resume: none (nil, nil) when
// there is no saved state; an error (a *savestate.Refused, mostly) when
// there is one that vm cannot resume. A suspend cut short (no manifest)
// is cleared away.
func (d *Daemon) savedState(ctx context.Context, vm machine.Machine, mc machine.Config) (*machine.Saved, error) {
	dir := d.paths.Suspend()
	m, err := savestate.Load(dir)
	if errors.Is(err, savestate.ErrNone) {
		if _, serr := os.Lstat(dir); serr == nil {
			d.log.Warn("a suspend was cut short; the guest boots cold from its disk", "dir", dir)
			_ = os.RemoveAll(dir)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	saver, ok := vm.(machine.Saver)
	if !ok {
		backend, _ := describe(vm)
		return nil, &savestate.Refused{What: "the " + backend + " backend cannot resume a saved guest"}
	}
	now, err := d.manifestNow(ctx, saver)
	if err != nil {
		return nil, &savestate.Refused{What: fmt.Sprintf("the host cannot say what it would resume it with (%v)", err)}
	}
	if now.Disk, err = savestate.Stamp(mc.Disk); err != nil {
		return nil, &savestate.Refused{What: fmt.Sprintf("its disk cannot be read (%v)", err)}
	}
	if mc.DiskFormat == instance.DiskQcow2 && now.Disk != m.Disk && onSavedLayer(mc.Disk, m) {
		// The saved disk became a snapshot's layer, and the disk is an
		// empty overlay on it: the guest sees what it saw.
		now.VM.Disk, now.VM.DiskFormat, now.Disk = m.VM.Disk, m.VM.DiskFormat, m.Disk
	}
	if err := m.Check(now); err != nil {
		return nil, err
	}
	if err := m.CheckFiles(dir); err != nil {
		return nil, err
	}
	d.forkOf = ""
	if m.Instance != "" && m.Instance != d.identity() {
		d.forkOf = m.Instance
	}
	return &machine.Saved{Dir: dir, Memory: mc.Memory}, nil
}

// onSavedLayer says whether disk, a qcow2 overlay, and the layers under
// it down to the very file the state m was saved with (its inode, size
// and time: a snapshot renamed it into a layer, which changes none of
// them) hold nothing: the guest then sees what it saw. Every header read
// here is cowork's or QEMU's (the instance's overlay and its snapshot
// layers, whose chain hostd checked before: golden.Store.CheckOverlay),
// never a guest's raw disk; the walk is bounded as that check is.
func onSavedLayer(disk string, m *savestate.Manifest) bool {
	cur := disk
	for depth := 0; depth <= golden.MaxChain; depth++ {
		info, err := qcow2.ReadInfo(cur)
		if err != nil || info.Backing == "" {
			return false
		}
		if n, err := qcow2.Written(cur); err != nil || n != 0 {
			return false
		}
		if st, err := savestate.Stamp(info.Backing); err == nil && st == m.Disk && info.BackingFormat == m.VM.DiskFormat {
			return true
		}
		if info.BackingFormat != instance.DiskQcow2 {
			return false
		}
		cur = info.Backing
	}
	return false
}

// resume loads the saved guest into vm and runs it on. The saved state is
// retired (renamed away, the rename flushed) before the guest runs: from
// then on its disk moves away from the state, and a crash must never
// resume that state again.
func (d *Daemon) resume(ctx context.Context, vm machine.Machine, saved *machine.Saved) (err error) {
	saver := vm.(machine.Saver)
	began := time.Now()
	if err := saver.Restore(ctx, saved); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = vm.Stop(context.Background(), 0)
		}
	}()
	if d.standby {
		if err := d.awaitWake(ctx, vm); err != nil {
			return err
		}
		began = time.Now()
	}
	if err := d.retireState(); err != nil {
		return fmt.Errorf("retire the saved state: %w", err)
	}
	if err := saver.Continue(ctx); err != nil {
		return err
	}
	d.mu.Lock()
	d.vm, d.started, d.resumed = vm, time.Now(), true
	d.mu.Unlock()
	backend, accel := describe(vm)
	d.events.emit(controlwire.PhaseVMStarted, fmt.Sprintf("VM resumed from its saved state in %.1fs (%s, %s)", time.Since(began).Seconds(), backend, accel), nil)
	go func() { _ = os.RemoveAll(d.paths.SuspendRetired()) }()
	return nil
}

// retireState moves the saved state out of the way of the next start.
func (d *Daemon) retireState() error {
	old := d.paths.SuspendRetired()
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(d.paths.Suspend(), old); err != nil {
		return err
	}
	return dirsync.Sync(filepath.Dir(old))
}

// rejectState notes why the saved state is not resumed and sets it aside
// (the last one rejected is kept, for a look).
func (d *Daemon) rejectState(why error) {
	d.log.Warn("saved state not resumed", "why", why)
	d.events.emit(controlwire.PhaseNote, "the saved guest is not resumed; booting cold", why)
	rejected := d.paths.SuspendRejected()
	_ = os.RemoveAll(rejected)
	if err := os.Rename(d.paths.Suspend(), rejected); err != nil {
		_ = os.RemoveAll(d.paths.Suspend())
	}
	_ = dirsync.Sync(d.paths.Dir())
}

// plugShare plugs the share back into a resumed guest (it was unplugged
// for the save), in the background: the guest's agent reconnects
// meanwhile. The channel gets the outcome.
func (d *Daemon) plugShare(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	saver, ok := d.machine().(machine.Saver)
	if !ok {
		done <- errors.New("the VM cannot plug the share in")
		return done
	}
	go func() { done <- saver.AttachShare(ctx) }()
	return done
}

// remountAfterResume has the resumed guest mount its share again once it
// is plugged in (plugged), before the instance reports ready. A guest
// left without it runs on, with a note saying how to get it back.
func (d *Daemon) remountAfterResume(ctx context.Context, plugged <-chan error) {
	began := time.Now()
	err := <-plugged
	if err == nil {
		err = d.attachShare(ctx, nil, false)
	} else {
		err = fmt.Errorf("plug the share in: %w", err)
	}
	if err != nil {
		d.log.Error("the resumed guest runs without its share", "err", err)
		d.events.emit(controlwire.PhaseNote, "the guest has no "+instance.GuestWorkspace+" (or other mounts); `cowork stop` and `cowork start` bring them back", err)
		return
	}
	d.log.Info("share mounted again", "took", time.Since(began))
}

// personalizeBeside personalizes a resumed fork while the boot goes on
// (its share is mounted meanwhile); the channel closes once that is done,
// at once for a guest that is no fork.
func (d *Daemon) personalizeBeside(ctx context.Context, resumed bool) <-chan struct{} {
	done := make(chan struct{})
	if !resumed || d.forkOf == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		d.personalize(ctx)
	}()
	return done
}

// personalize makes a fork its own (a guest resumed from another
// instance's memory, d.forkOf): without it, it would draw the same random
// numbers as its parent and its other forks until its kernel next
// reseeds, and share their machine-id. A guest that cannot is left
// running, with a note saying so.
func (d *Daemon) personalize(ctx context.Context) {
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	seed := make([]byte, agentcall.SeedSize)
	_, err := rand.Read(seed)
	if err == nil && agent == nil {
		err = errors.New("no agent")
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var id string
		if id, err = agent.Personalize(ctx, seed, guestHostname); err == nil {
			d.log.Info("fork personalized", "of", d.forkOf, "machine_id", id)
			return
		}
	}
	d.log.Error("the fork could not make itself its own", "of", d.forkOf, "err", err)
	d.events.emit(controlwire.PhaseNote, "this guest was resumed from "+d.forkOf+"'s memory and could not reseed its random numbers or take a new machine-id; `cowork stop` and `cowork start --cold` boot it as its own", err)
}

// identity names this instance in the manifests it saves: its name and
// cloud-init instance-id, which a clone gets anew even where it takes a
// deleted instance's name.
func (d *Daemon) identity() string {
	return d.name + "/" + d.cfg.InstanceID
}
