package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// shareDetachWait bounds the wait for the guest to let the share's device
// go: a device the guest did not eject goes once its pciehp powers the
// slot off, after its attention button's 5 s delay (6.2 s measured under
// TCG).
var shareDetachWait = 30 * time.Second

// startShareServers starts a virtiofsd on each share's socket, for a
// boot that plugs every share in; on error none is left running.
func (v *VM) startShareServers(ctx context.Context) error {
	procs := make([]*process, len(v.cfg.Shares))
	for i := range v.cfg.Shares {
		p, err := v.startShareServer(ctx, i)
		if err != nil {
			for _, p := range procs[:i] {
				p.kill()
			}
			return err
		}
		procs[i] = p
	}
	v.mu.Lock()
	v.virtiofs = procs
	v.plugged = make([]bool, len(procs))
	for i := range v.plugged {
		v.plugged[i] = true
	}
	v.mu.Unlock()
	return nil
}

// startShareServer starts share i's virtiofsd.
func (v *VM) startShareServer(ctx context.Context, i int) (*process, error) {
	if v.serveShare != nil {
		return v.serveShare(ctx, i)
	}
	sh := v.cfg.Shares[i]
	p, err := startVirtiofsd(ctx, sh, v.run.virtiofs(i), v.run.virtiofsLog(i), v.cfg.ShareUID, v.cfg.ShareGID, v.log)
	if err != nil {
		return nil, fmt.Errorf("share %s: %w", sh.Dir, err)
	}
	return p, nil
}

// stopShareServers ends the virtiofsds that run and waits until they are
// reaped.
func (v *VM) stopShareServers() {
	v.mu.Lock()
	procs, pending := v.virtiofs, v.pending
	v.virtiofs, v.plugged, v.pending = nil, nil, nil
	v.mu.Unlock()
	if pending != nil {
		go func() { killServed(<-pending) }()
	}
	for _, p := range procs {
		if p != nil {
			p.kill()
		}
	}
}

// shareState is a copy of which shares are served and plugged in.
func (v *VM) shareState() (served, plugged []bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	served, plugged = make([]bool, len(v.cfg.Shares)), make([]bool, len(v.cfg.Shares))
	for i := range v.cfg.Shares {
		served[i] = i < len(v.virtiofs) && v.virtiofs[i] != nil
		plugged[i] = i < len(v.plugged) && v.plugged[i]
	}
	return served, plugged
}

// setShare records share i's server (nil: stopped, and the one there is
// killed) and whether its device is plugged in.
func (v *VM) setShare(i int, p *process, plugged bool) {
	v.mu.Lock()
	n := len(v.cfg.Shares)
	v.virtiofs = append(v.virtiofs, make([]*process, max(0, n-len(v.virtiofs)))...)
	v.plugged = append(v.plugged, make([]bool, max(0, n-len(v.plugged)))...)
	old := v.virtiofs[i]
	v.virtiofs[i], v.plugged[i] = p, plugged
	v.mu.Unlock()
	if old != nil && old != p {
		old.kill()
	}
}

// DetachShare unplugs the shares' devices from the running guest and ends
// their virtiofsds: QEMU 7.2 cannot save a guest with a vhost-user-fs
// device attached. The guest must have unmounted them first (hostd asks
// its agent): what still uses one loses it.
//
// eject (the agent's ShareEject) goes first: the guest powers the
// devices' slots off itself, which QEMU takes as their release, at once.
// What it did not hand back, and all of it when eject is nil or fails,
// is asked for with device_del, which the guest's kernel (pciehp) grants
// after its attention button's 5 s delay (6.2 s measured under TCG); a
// share the guest does not let go of within shareDetachWait stays
// plugged in and served, and the error names it. Whatever the guest
// says, only QEMU's word counts: the device's DEVICE_DELETED, which QEMU
// sends once it has let go of the device and its socket, after a
// device_del or one refused for a device QEMU no longer has (ejected).
// AttachShare plugs back what went.
func (v *VM) DetachShare(ctx context.Context, eject func(context.Context) error) error {
	if len(v.cfg.Shares) == 0 {
		return errors.New("this VM has no share to detach")
	}
	gone := make(chan int, len(v.cfg.Shares))
	v.mu.Lock()
	v.shareGone = gone
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.shareGone = nil
		v.mu.Unlock()
	}()
	_, plugged := v.shareState()
	if eject != nil {
		if err := eject(ctx); err != nil {
			v.log.Info("the guest did not hand its shares back itself; asking its kernel for them", "err", err)
		}
	}
	var errs []error
	asked, released := map[int]bool{}, map[int]bool{}
	for i, on := range plugged {
		if !on {
			continue
		}
		_, dev, _ := shareIDs(i)
		if _, err := v.qmp("device_del", map[string]any{"id": dev}); err != nil {
			// Ejected: QEMU has let go of it, and lets go of its socket
			// once the device is finalized, when DEVICE_DELETED comes (or
			// came already: the guest ejected it before this detach).
			if has, qerr := v.hasDevice(dev); qerr != nil || has {
				errs = append(errs, fmt.Errorf("unplug the share of %s: %w", v.cfg.Shares[i].Dir, err))
				continue
			}
			if v.wasDeleted(i) {
				released[i] = true
				continue
			}
		}
		asked[i] = true
	}
	wait := time.NewTimer(shareDetachWait)
	defer wait.Stop()
waiting:
	for !allIn(asked, released) {
		select {
		case i := <-gone:
			if asked[i] {
				released[i] = true
			}
		case <-wait.C:
			for i := range asked {
				if !released[i] {
					errs = append(errs, fmt.Errorf("the guest did not release the device of the share %s within %s (is it still mounted in the guest?); it stays attached", v.cfg.Shares[i].Dir, shareDetachWait))
				}
			}
			break waiting
		case <-v.Done():
			return errors.New("the VM stopped while the shares were being unplugged")
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			break waiting
		}
	}
	for i := range released {
		_, _, chardev := shareIDs(i)
		if _, err := v.qmp("chardev-remove", map[string]any{"id": chardev}); err != nil {
			errs = append(errs, fmt.Errorf("remove the socket of the share %s from QEMU: %w", v.cfg.Shares[i].Dir, err))
		}
		v.setShare(i, nil, false)
	}
	return errors.Join(errs...)
}

// allIn says whether every key of want is in have.
func allIn(want, have map[int]bool) bool {
	for i := range want {
		if !have[i] {
			return false
		}
	}
	return true
}

// wasDeleted says whether QEMU reported share i's device deleted since
// it was last plugged in.
func (v *VM) wasDeleted(i int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.deleted[i]
}

// hasDevice asks QEMU whether it has the device id (one of those made
// with -device or device_add, which QEMU keeps in /machine/peripheral).
func (v *VM) hasDevice(id string) (bool, error) {
	raw, err := v.qmp("qom-list", map[string]any{"path": "/machine/peripheral"})
	if err != nil {
		return false, err
	}
	var props []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &props); err != nil {
		return false, fmt.Errorf("QMP qom-list: %w", err)
	}
	for _, p := range props {
		if p.Name == id {
			return true, nil
		}
	}
	return false, nil
}

// AttachShare plugs back into a running guest every share that is not in
// it, each behind its root port: a new virtiofsd, its socket as a new
// chardev, the device. The guest then sees new virtiofs devices, which
// hostd's agent mounts (a device may take a moment to appear: the mount
// is to be retried). A share that fails is left out, whole, and named;
// the others are plugged in regardless.
func (v *VM) AttachShare(ctx context.Context) error {
	if len(v.cfg.Shares) == 0 {
		return errors.New("this VM has no share to attach")
	}
	if err := v.plugPending(ctx); err != nil {
		return err
	}
	served, plugged := v.shareState()
	var errs []error
	for i, sh := range v.cfg.Shares {
		if plugged[i] {
			continue
		}
		if served[i] { // a server left from a detach cut short: start afresh
			v.setShare(i, nil, false)
		}
		if err := v.plugShare(ctx, i); err != nil {
			errs = append(errs, fmt.Errorf("plug the share %s in: %w", sh.Dir, err))
		}
	}
	return errors.Join(errs...)
}

// plugShare serves share i and plugs its device in; on error nothing of
// it is left.
func (v *VM) plugShare(ctx context.Context, i int) error {
	p, err := v.startShareServer(ctx, i)
	if err != nil {
		return err
	}
	return v.plugServer(i, p)
}

// plugServer connects QEMU to p, share i's running virtiofsd, and plugs
// the share's device in; on error p is ended and nothing of it is left.
func (v *VM) plugServer(i int, p *process) error {
	port, dev, chardevID := shareIDs(i)
	chardev := map[string]any{
		"id": chardevID,
		"backend": map[string]any{"type": "socket", "data": map[string]any{
			"addr":   map[string]any{"type": "unix", "data": map[string]any{"path": v.run.virtiofs(i)}},
			"server": false,
		}},
	}
	if _, err := v.qmp("chardev-add", chardev); err != nil {
		p.kill()
		return fmt.Errorf("connect QEMU to its server: %w", err)
	}
	device := map[string]any{
		"driver": "vhost-user-fs-pci", "id": dev, "bus": port,
		"chardev": chardevID, "tag": v.cfg.Shares[i].Tag,
	}
	// Before the device is there: a guest that ejects it at once is on
	// the record (QEMU finalized the one before, with its event, before
	// its id could be taken again).
	v.mu.Lock()
	delete(v.deleted, i)
	v.mu.Unlock()
	if _, err := v.qmp("device_add", device); err != nil {
		_, _ = v.qmp("chardev-remove", map[string]any{"id": chardevID})
		p.kill()
		return err
	}
	v.setShare(i, p, true)
	return nil
}

// serveShares starts every share's virtiofsd in the background, for a
// restore that plugs them in before the guest runs (plugServed); the
// channel gets each share's server, nil for one that did not start
// (logged: AttachShare tries it again).
func (v *VM) serveShares(ctx context.Context) <-chan []*process {
	done := make(chan []*process, 1)
	go func() {
		procs := make([]*process, len(v.cfg.Shares))
		for i, sh := range v.cfg.Shares {
			p, err := v.startShareServer(ctx, i)
			if err != nil {
				v.log.Warn("share server did not start; it is tried again after the resume", "dir", sh.Dir, "err", err)
				continue
			}
			procs[i] = p
		}
		done <- procs
	}()
	return done
}

// plugServed plugs in the shares whose servers serveShares started; a
// share that fails is logged and left out (AttachShare tries it again).
func (v *VM) plugServed(procs []*process) {
	for i, p := range procs {
		if p == nil {
			continue
		}
		if err := v.plugServer(i, p); err != nil {
			v.log.Warn("share not plugged in before the resume; it is tried again after", "dir", v.cfg.Shares[i].Dir, "err", err)
		}
	}
}

// plugPending plugs in the servers a restore started that were not up
// when it loaded the guest, once they are.
func (v *VM) plugPending(ctx context.Context) error {
	v.mu.Lock()
	pending := v.pending
	v.pending = nil
	v.mu.Unlock()
	if pending == nil {
		return nil
	}
	select {
	case procs := <-pending:
		v.plugServed(procs)
		return nil
	case <-ctx.Done():
		go func() { killServed(<-pending) }()
		return ctx.Err()
	}
}

// killServed ends the servers serveShares started, for a restore that
// failed.
func killServed(procs []*process) {
	for _, p := range procs {
		if p != nil {
			p.kill()
		}
	}
}

// qmp runs one QMP command and returns what it returned.
func (v *VM) qmp(command string, arguments any) (json.RawMessage, error) {
	if v.monitor == nil {
		return nil, errors.New("the VM is not running")
	}
	req := map[string]any{"execute": command}
	if arguments != nil {
		req["arguments"] = arguments
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	raw, err := v.monitor.Run(b)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	var r struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	return r.Return, nil
}
