package hostd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/internal/buildinfo"
)

// suspendTimeout bounds a whole suspend: the share's unplug (30 s at
// most), the save (seconds per GiB of memory in use) and the flushes.
const suspendTimeout = 10 * time.Minute

// agentCallTimeout bounds each call to the guest's agent in a suspend: a
// guest that does not answer must not hold the suspend, and the stops
// asked meanwhile, for its whole suspendTimeout.
const agentCallTimeout = 30 * time.Second

// suspendRequest is a `cowork suspend` for the main loop to carry out.
type suspendRequest struct {
	force bool
	began time.Time
	done  chan suspendResult // buffered: the loop never waits for the caller
}

type suspendResult struct {
	sus *controlwire.Suspended
	err error
}

// requestSuspend hands a suspend to the main loop and waits for it. It is
// refused at once, nothing changed, when the instance is not ready, its
// backend cannot save a guest, or a suspend is already under way.
func (d *Daemon) requestSuspend(ctx context.Context, force bool) (*controlwire.Suspended, error) {
	d.mu.Lock()
	vm, ready := d.vm, d.ready
	d.mu.Unlock()
	if vm == nil || !ready {
		return nil, controlwire.Errorf(controlwire.CodeFailedPrecondition, "instance %s is not ready: suspend it once `cowork start` has finished, or stop it", d.name)
	}
	if _, ok := vm.(machine.Saver); !ok {
		backend, _ := describe(vm)
		return nil, controlwire.Errorf(controlwire.CodeFailedPrecondition, "the %s backend cannot save a guest; `cowork stop` stops it instead", backend)
	}
	if !d.suspending.CompareAndSwap(false, true) {
		return nil, controlwire.Errorf(controlwire.CodeFailedPrecondition, "instance %s is being suspended already", d.name)
	}
	req := suspendRequest{force: force, began: time.Now(), done: make(chan suspendResult, 1)}
	select {
	case d.suspendReq <- req:
	case <-vm.Done():
		d.suspending.Store(false)
		return nil, controlwire.Errorf(controlwire.CodeUnavailable, "the VM stopped")
	case <-ctx.Done():
		d.suspending.Store(false)
		return nil, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.sus, r.err
	case <-ctx.Done():
		return nil, ctx.Err() // the suspend goes on: hostd finishes what it began
	}
}

// suspend saves the running guest into the instance's suspend folder and
// stops the VM: the guest lets go of the share (QEMU 7.2 cannot save a
// virtiofs device), the share is unplugged, the guest saved, its VM
// stopped, and the manifest written last. Until the save is complete any
// failure puts the share back and the guest runs on as before.
func (d *Daemon) suspend(req suspendRequest) (*controlwire.Suspended, error) {
	ctx, cancel := context.WithTimeout(context.Background(), suspendTimeout)
	defer cancel()
	// A stop asked meanwhile cuts the suspend short: the guest then runs
	// on (or is already saved), and the main loop stops it next.
	d.mu.Lock()
	d.cancelSuspend = cancel
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.cancelSuspend = nil
		d.mu.Unlock()
	}()
	d.mu.Lock()
	vm, agent := d.vm, d.agent
	d.mu.Unlock()
	saver := vm.(machine.Saver) // requestSuspend checked
	// What the state depends on, known before anything changes: a host
	// whose hypervisor cannot say refuses here, the guest untouched.
	m, err := d.manifestNow(ctx, saver)
	if err != nil {
		return nil, controlwire.Errorf(controlwire.CodeInternal, "cannot suspend: %v", err)
	}
	if err := d.releaseShares(ctx, agent, req.force); err != nil {
		return nil, err
	}
	d.setSuspending(true)
	d.events.emit(controlwire.PhaseSuspending, "suspending: saving the guest's memory and devices", nil)
	if err := saver.DetachShare(ctx, d.ejectShares(agent)); err != nil {
		d.remountShare(ctx, saver, true) // plugs back what went, if any did
		return nil, d.suspendFailed(fmt.Errorf("unplug the share: %w", err))
	}
	dir := d.paths.Suspend()
	if err := clearState(dir); err != nil {
		d.remountShare(ctx, saver, true)
		return nil, d.suspendFailed(err)
	}
	saved, err := saver.Save(ctx, dir)
	if err != nil {
		_ = clearState(dir)
		d.remountShare(ctx, saver, true)
		return nil, d.suspendFailed(fmt.Errorf("save the guest: %w", err))
	}
	// The guest is paused and saved: from here its VM ends either way.
	_ = vm.Stop(ctx, 0)
	<-vm.Done()
	if err := d.commitState(saved, m); err != nil {
		// A manifest may be there (written, its folder not flushed): it
		// goes first, so that no start resumes a state this says is gone.
		_ = os.Remove(filepath.Join(dir, savestate.ManifestName))
		_ = clearState(dir)
		d.log.Error("suspend failed after the save; the next start boots cold", "err", err)
		return nil, controlwire.Errorf(controlwire.CodeInternal, "the guest was saved, but its record was not (%v): the VM has stopped, and the next start boots it cold from its disk, which is consistent", err)
	}
	sus := &controlwire.Suspended{Bytes: savestate.Usage(dir), TookMS: time.Since(req.began).Milliseconds()}
	d.log.Info("suspended", "dir", dir, "bytes", sus.Bytes, "took", time.Since(req.began))
	return sus, nil
}

// manifestNow is the manifest of a state saved (or resumed) here now, but
// for the disk's stamp and the files, which the save decides.
func (d *Daemon) manifestNow(ctx context.Context, saver machine.Saver) (savestate.Manifest, error) {
	id, err := saver.Identity(ctx)
	if err != nil {
		return savestate.Manifest{}, err
	}
	digests := GoldenDigests()
	m := savestate.Manifest{
		Cowork:     buildinfo.Version,
		Instance:   d.identity(),
		Hypervisor: savestate.Binary{Path: id.Binary, Version: id.Version},
		VM: savestate.VM{
			Arch: d.cfg.Arch, CPUs: d.cfg.CPUs, Memory: int64(d.cfg.Memory),
			Disk: d.cfg.DiskPath(d.paths), DiskFormat: d.cfg.Format(),
			MAC: d.guestMAC().String(), Devices: id.Devices,
		},
	}
	if m.HostBootID, err = savestate.HostBootID(); err != nil {
		return m, fmt.Errorf("the host's boot id: %w", err)
	}
	m.Backend, _ = describe(saver.(machine.Machine))
	if m.Hypervisor.SHA256, err = digests.Of(id.Binary); err != nil {
		return m, fmt.Errorf("the hypervisor %s: %w", id.Binary, err)
	}
	if id.Firmware != "" {
		if m.VM.FirmwareSHA256, err = digests.Of(id.Firmware); err != nil {
			return m, fmt.Errorf("the firmware %s: %w", id.Firmware, err)
		}
	}
	return m, nil
}

// ejectShares is DetachShare's eject: the guest's agent hands the shares'
// devices back at once (agentcall.MethodShareEject). An agent of an
// older build does not know the call, and its guest's kernel is asked
// instead, as before.
func (d *Daemon) ejectShares(agent *agentrpc.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
		defer cancel()
		n, err := agent.ShareEject(ctx)
		if err == nil {
			d.log.Info("the guest handed its shares back", "devices", n)
		}
		return err
	}
}

// commitState stamps the disk as the stopped VM left it and writes the
// manifest, which makes the state one a start resumes. The files it
// records are the backend's (Saved.FileNames).
func (d *Daemon) commitState(saved *machine.Saved, m savestate.Manifest) error {
	var err error
	if m.Disk, err = savestate.Stamp(d.cfg.DiskPath(d.paths)); err != nil {
		return err
	}
	if m.Files, err = savestate.Sizes(saved.Dir, saved.FileNames()...); err != nil {
		return err
	}
	m.Saved = time.Now().UTC()
	return savestate.Write(saved.Dir, &m)
}

// suspendFailed reports a suspend that failed, the guest running on, or
// left paused when the hypervisor would not run it on.
func (d *Daemon) suspendFailed(err error) error {
	d.setSuspending(false)
	if vm := d.machine(); vm != nil && vm.State() != machine.Running {
		d.log.Error("suspend failed, and the guest is not running", "state", vm.State(), "err", err)
		d.events.emit(controlwire.PhaseNote, "suspend failed; the guest is "+string(vm.State()), err)
		return controlwire.Errorf(controlwire.CodeInternal, "cannot suspend: %v; the guest is %s: `cowork stop --force%s` ends it, and the next start boots it from its disk", err, vm.State(), instance.NameFlag(d.name))
	}
	d.log.Warn("suspend failed; the guest runs on", "err", err)
	d.events.emit(controlwire.PhaseNote, "suspend failed; the guest runs on", err)
	return controlwire.Errorf(controlwire.CodeInternal, "cannot suspend: %v; the guest runs on as before", err)
}

// suspendAnswered runs once the main loop has answered a suspend (tests
// delay it, to show that a refused suspend's client may ask again at once).
var suspendAnswered = func() {}

// setSuspending marks the instance as being suspended, for its status.
func (d *Daemon) setSuspending(on bool) {
	d.mu.Lock()
	d.inSuspend = on
	d.mu.Unlock()
	if !on {
		d.suspending.Store(false)
	}
}

// suspended ends hostd after a suspend.
func (d *Daemon) suspended(sus *controlwire.Suspended) error {
	d.console.Close(consoleWait)
	d.events.emit(controlwire.PhaseSuspended, fmt.Sprintf("suspended (%s saved in %.1fs); `cowork start` resumes it", humanBytes(sus.Bytes), float64(sus.TookMS)/1000), nil)
	return nil
}

// clearState empties dir of what a suspend cut short left (no manifest:
// nothing resumable), and refuses to overwrite a state that is whole.
// The folder itself stays: it may be a mount point of its own.
func clearState(dir string) error {
	if _, err := savestate.Load(dir); err == nil {
		return fmt.Errorf("%s holds a saved guest already", dir)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// humanBytes is n in MiB or GiB, for a message.
func humanBytes(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", (n+(1<<20)-1)>>20)
}
