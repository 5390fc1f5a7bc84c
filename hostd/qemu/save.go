package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/dirsync"
)

var _ machine.Saver = (*VM)(nil)

// How a guest is saved: through QEMU's migration to a file descriptor
// hostd hands QEMU (getfd): exec: migrations run a shell, which QEMU's
// -sandbox kills it for, and file: is QEMU 8.2's. The stream holds the
// devices only (x-ignore-shared): the RAM is hostd's memfd, which hostd
// copies itself, sparse.
const (
	saveFDName    = "cowork-save"
	restoreFDName = "cowork-restore"
	// ignoreShared leaves shared RAM (hostd's memfd) out of the stream.
	ignoreShared = "x-ignore-shared"
	// migrateBandwidth lifts QEMU's default limit of 32 MiB/s, meant for
	// a live migration over a network: the guest is paused, and its
	// state goes to a local file (7.3 s → 0.5 s for 95 MB).
	migrateBandwidth = 1 << 40
	// maxDeviceState bounds the device state hostd hands QEMU's loader:
	// a few hundred KiB for a cowork guest; more is not one hostd wrote.
	maxDeviceState = 64 << 20
)

// migratePoll is how often hostd asks QEMU how a migration is going: a
// resume waits on the answer, and a question costs QEMU little.
var migratePoll = 5 * time.Millisecond

// Save writes the running guest to dir (machine.Saver): the share must be
// detached (DetachShare) first. QEMU stops the guest and writes its
// devices' state to dir/device.state; hostd copies the RAM's data to the
// sparse dir/ram and flushes both and dir. The guest stays paused. If
// anything fails the guest runs on (cont), nothing is left in dir, and
// the error says why: a full disk is QEMU's "No space left on device".
func (v *VM) Save(ctx context.Context, dir string) (_ *machine.Saved, err error) {
	if s := v.State(); s != machine.Running {
		return nil, fmt.Errorf("cannot save a VM that is %s", s)
	}
	v.mu.Lock()
	shared := slices.Contains(v.plugged, true)
	v.mu.Unlock()
	if shared {
		return nil, errors.New("the shares are attached: QEMU cannot save a guest with a virtiofs device; detach them first")
	}
	if err := v.setIgnoreShared(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	saved := &machine.Saved{Dir: dir, Memory: v.cfg.Memory, Files: []string{machine.DeviceStateFile, machine.RAMFile}}
	state, err := createExclusive(saved.DeviceState())
	if err != nil {
		return nil, err
	}
	defer state.Close()
	ram, err := createExclusive(saved.RAM())
	if err != nil {
		os.Remove(saved.DeviceState())
		return nil, err
	}
	defer ram.Close()
	defer func() {
		if err != nil {
			os.Remove(saved.DeviceState())
			os.Remove(saved.RAM())
		}
	}()

	if _, err := v.qmp("stop", nil); err != nil {
		return nil, fmt.Errorf("pause the guest: %w", err)
	}
	v.SetState(machine.Paused)
	defer func() {
		if err == nil {
			return
		}
		if _, cerr := v.qmp("cont", nil); cerr != nil {
			err = fmt.Errorf("%w; and the guest did not run on: %w", err, cerr)
			return
		}
		v.SetState(machine.Running)
	}()
	if _, err := v.qmp("migrate-set-parameters", map[string]any{"max-bandwidth": migrateBandwidth}); err != nil {
		return nil, err
	}
	if err := v.passFD(saveFDName, state); err != nil {
		return nil, err
	}
	if _, err := v.qmp("migrate", map[string]any{"uri": "fd:" + saveFDName}); err != nil {
		return nil, fmt.Errorf("save the guest's devices: %w", err)
	}
	if err := v.waitMigration(ctx, true); err != nil {
		return nil, fmt.Errorf("save the guest's devices to %s: %w", saved.DeviceState(), err)
	}
	v.mu.Lock()
	mem := v.ram
	v.mu.Unlock()
	if mem == nil {
		return nil, errors.New("the guest's memory is gone: QEMU exited")
	}
	began := time.Now()
	n, err := copyExtents(ram, mem, v.cfg.Memory)
	if err != nil {
		return nil, fmt.Errorf("save the guest's memory: %w", err)
	}
	for _, f := range []*os.File{state, ram} {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("flush %s: %w", f.Name(), err)
		}
	}
	if err := dirsync.Sync(dir); err != nil {
		return nil, err
	}
	v.log.Info("saved the guest", "dir", dir, "ram_bytes", n, "ram_copy", time.Since(began))
	return saved, nil
}

// Restore loads a saved guest into a new QEMU (machine.Saver) and leaves
// it paused: Continue runs it. QEMU starts with -incoming defer while the
// RAM file is copied into its memfd (QEMU does not touch the guest's
// memory before the device state loads) and the shares' servers start;
// then QEMU reads the device state. The shares whose servers are up by
// then are plugged in, so that the guest finds them as it runs on; the
// rest wait for AttachShare, which must follow, as it does after a
// restore without them. The files are opened without
// following symlinks and checked against the Config: QEMU's loader
// trusts what it reads, so hostd hands it only regular files of the
// sizes it writes.
func (v *VM) Restore(ctx context.Context, s *machine.Saved) (err error) {
	if s.Memory != v.cfg.Memory {
		return fmt.Errorf("the saved guest had %d MiB of memory, this VM %d MiB", s.Memory>>20, v.cfg.Memory>>20)
	}
	ram, err := openSaved(s.RAM(), s.Memory, s.Memory)
	if err != nil {
		return err
	}
	defer ram.Close()
	state, err := openSaved(s.DeviceState(), 1, maxDeviceState)
	if err != nil {
		return err
	}
	defer state.Close()
	mem, err := newGuestRAM(v.cfg.Memory)
	if err != nil {
		return err
	}
	loaded := v.loadRAM(mem, ram, s.Memory)
	servers := v.serveShares(ctx)
	defer func() {
		if err != nil {
			killServed(<-servers)
		}
	}()
	if err := v.launch(ctx, mem); err != nil {
		<-loaded // launch closed mem: the copy ends, and no later
		return err
	}
	defer func() {
		if err != nil {
			v.MarkStopping()
			v.kill()
			<-v.Done()
		}
	}()
	if err := <-loaded; err != nil {
		return fmt.Errorf("load the guest's memory: %w", err)
	}
	if err := v.setIgnoreShared(); err != nil {
		return err
	}
	if err := v.passFD(restoreFDName, state); err != nil {
		return err
	}
	if _, err := v.qmp("migrate-incoming", map[string]any{"uri": "fd:" + restoreFDName}); err != nil {
		return v.qemuFailed(fmt.Errorf("load the guest's devices: %w", err))
	}
	if err := v.waitMigration(ctx, false); err != nil {
		return v.qemuFailed(fmt.Errorf("load the guest's devices from %s: %w", s.DeviceState(), err))
	}
	v.SetState(machine.Paused)
	select {
	case procs := <-servers: // up already: the guest finds them as it wakes
		v.plugServed(procs)
	default: // not yet: AttachShare plugs them in once they are
		v.mu.Lock()
		v.pending = servers
		v.mu.Unlock()
	}
	return nil
}

// loadRAM copies the saved RAM file into mem in the background; the
// channel gets the outcome.
func (v *VM) loadRAM(mem, ram *os.File, size int64) <-chan error {
	done := make(chan error, 1)
	go func() {
		began := time.Now()
		_, err := copyExtents(mem, ram, size)
		if err == nil {
			v.log.Info("loaded the guest's memory", "took", time.Since(began))
		}
		done <- err
	}()
	return done
}

// Continue runs a paused guest on (machine.Saver).
func (v *VM) Continue(context.Context) error {
	if _, err := v.qmp("cont", nil); err != nil {
		return fmt.Errorf("run the guest on: %w", err)
	}
	v.SetState(machine.Running)
	return nil
}

// setIgnoreShared turns on x-ignore-shared, after checking that this QEMU
// has it: without it the whole RAM would go through the stream, and load
// back into QEMU's own memory rather than a memfd hostd can save.
func (v *VM) setIgnoreShared() error {
	raw, err := v.qmp("query-migrate-capabilities", nil)
	if err != nil {
		return err
	}
	var caps []struct {
		Capability string `json:"capability"`
	}
	if err := json.Unmarshal(raw, &caps); err != nil {
		return fmt.Errorf("QMP query-migrate-capabilities: %w", err)
	}
	found := false
	for _, c := range caps {
		found = found || c.Capability == ignoreShared
	}
	if !found {
		return fmt.Errorf("this QEMU%s cannot leave shared memory out of a migration (no capability %s), which saving a guest needs; install QEMU 4.0 or newer", v.qemuVersion(), ignoreShared)
	}
	_, err = v.qmp("migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": ignoreShared, "state": true}},
	})
	return err
}

// qemuVersion is " (7.2.0)", or "" when QEMU did not say.
func (v *VM) qemuVersion() string {
	if v.monitor == nil || v.monitor.Version == nil {
		return ""
	}
	q := v.monitor.Version.QEMU
	return fmt.Sprintf(" (%d.%d.%d)", q.Major, q.Minor, q.Micro)
}

// passFD hands QEMU f under name (QMP getfd, the descriptor riding along
// as SCM_RIGHTS); QEMU's migration closes its copy when done.
func (v *VM) passFD(name string, f *os.File) error {
	b, _ := json.Marshal(map[string]any{"execute": "getfd", "arguments": map[string]any{"fdname": name}})
	if _, err := v.monitor.RunWithFile(b, f); err != nil {
		return fmt.Errorf("QMP getfd: %w", err)
	}
	return nil
}

// waitMigration polls query-migrate until the migration completes or
// fails. A save that ctx cuts short is cancelled (migrate_cancel).
func (v *VM) waitMigration(ctx context.Context, outgoing bool) error {
	for {
		raw, err := v.qmp("query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("QMP query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			if st.ErrorDesc == "" {
				st.ErrorDesc = "the migration " + st.Status
			}
			return errors.New(st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			if outgoing {
				_, _ = v.qmp("migrate_cancel", nil)
			}
			return ctx.Err()
		case <-v.Done():
			return errors.New("QEMU exited")
		case <-time.After(migratePoll):
		}
	}
}

// createExclusive makes a new file for a saved guest: never one that is
// there already, nor through a symlink.
func createExclusive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the saved guest's %s: %w", filepath.Base(path), err)
	}
	return f, nil
}

// openSaved opens a saved guest's file for reading: a regular file, not a
// symlink, of min to max bytes.
func openSaved(path string, min, max int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("the saved guest's %s: %w", filepath.Base(path), err)
	}
	st, err := f.Stat()
	switch {
	case err != nil:
	case !st.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", path)
	case st.Size() < min || st.Size() > max:
		err = fmt.Errorf("%s is %d bytes, want %d to %d: not a guest this VM saved", path, st.Size(), min, max)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("the saved guest: %w", err)
	}
	return f, nil
}
