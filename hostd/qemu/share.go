package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// shareDetachWait bounds the wait for the guest to let the share's device
// go: on a PCIe root port the guest's pciehp powers the slot off after
// its attention button's 5 s delay (6.2 s measured under TCG).
var shareDetachWait = 30 * time.Second

// startShareServers starts a virtiofsd on each share's socket; on error
// none is left running.
func (v *VM) startShareServers(ctx context.Context) error {
	procs := make([]*process, 0, len(v.cfg.Shares))
	for i, sh := range v.cfg.Shares {
		p, err := startVirtiofsd(ctx, sh, v.run.virtiofs(i), v.run.virtiofsLog(i), v.cfg.ShareUID, v.cfg.ShareGID, v.log)
		if err != nil {
			for _, p := range procs {
				p.kill()
			}
			return fmt.Errorf("share %s: %w", sh.Dir, err)
		}
		procs = append(procs, p)
	}
	v.mu.Lock()
	v.virtiofs = procs
	v.mu.Unlock()
	return nil
}

// stopShareServers ends the virtiofsds that run and waits until they are
// reaped.
func (v *VM) stopShareServers() {
	v.mu.Lock()
	procs := v.virtiofs
	v.virtiofs = nil
	v.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

// DetachShare unplugs the shares' devices from the running guest and ends
// their virtiofsds: QEMU 7.2 cannot save a guest with a vhost-user-fs
// device attached. The guest must have unmounted them first (hostd asks
// its agent): what still uses one loses it. The guest's kernel releases a
// device (DEVICE_DELETED) seconds later, all of them at once; a guest that
// does not within shareDetachWait keeps what it kept, and the error says
// so.
func (v *VM) DetachShare(ctx context.Context) error {
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
	for i := range v.cfg.Shares {
		_, dev, _ := shareIDs(i)
		if _, err := v.qmp("device_del", map[string]any{"id": dev}); err != nil {
			return fmt.Errorf("unplug the share of %s: %w", v.cfg.Shares[i].Dir, err)
		}
	}
	wait := time.NewTimer(shareDetachWait)
	defer wait.Stop()
	left := len(v.cfg.Shares)
	released := make([]bool, len(v.cfg.Shares))
	for left > 0 {
		select {
		case i := <-gone:
			if !released[i] {
				released[i] = true
				left--
			}
		case <-wait.C:
			for i, ok := range released {
				if !ok {
					return fmt.Errorf("the guest did not release the device of the share %s within %s (is it still mounted in the guest?); it stays attached", v.cfg.Shares[i].Dir, shareDetachWait)
				}
			}
		case <-v.Done():
			return errors.New("the VM stopped while the shares were being unplugged")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := range v.cfg.Shares {
		_, _, chardev := shareIDs(i)
		if _, err := v.qmp("chardev-remove", map[string]any{"id": chardev}); err != nil {
			return fmt.Errorf("remove the share's socket from QEMU: %w", err)
		}
	}
	v.stopShareServers()
	return nil
}

// AttachShare plugs the shares back into a running guest, each behind its
// root port: a new virtiofsd, its socket as a new chardev, the device.
// The guest then sees new virtiofs devices, which hostd's agent mounts
// (a device may take a moment to appear: the mount is to be retried).
func (v *VM) AttachShare(ctx context.Context) (err error) {
	if len(v.cfg.Shares) == 0 {
		return errors.New("this VM has no share to attach")
	}
	v.mu.Lock()
	attached := len(v.virtiofs) > 0
	v.mu.Unlock()
	if attached {
		return errors.New("the shares are attached already")
	}
	if err := v.startShareServers(ctx); err != nil {
		return err
	}
	plugged := 0
	defer func() {
		if err != nil {
			for i := range plugged {
				_, dev, chardev := shareIDs(i)
				_, _ = v.qmp("device_del", map[string]any{"id": dev})
				_, _ = v.qmp("chardev-remove", map[string]any{"id": chardev})
			}
			v.stopShareServers()
		}
	}()
	for i, sh := range v.cfg.Shares {
		port, dev, chardevID := shareIDs(i)
		chardev := map[string]any{
			"id": chardevID,
			"backend": map[string]any{"type": "socket", "data": map[string]any{
				"addr":   map[string]any{"type": "unix", "data": map[string]any{"path": v.run.virtiofs(i)}},
				"server": false,
			}},
		}
		if _, err := v.qmp("chardev-add", chardev); err != nil {
			return fmt.Errorf("connect QEMU to the server of the share %s: %w", sh.Dir, err)
		}
		device := map[string]any{
			"driver": "vhost-user-fs-pci", "id": dev, "bus": port,
			"chardev": chardevID, "tag": sh.Tag,
		}
		if _, err := v.qmp("device_add", device); err != nil {
			_, _ = v.qmp("chardev-remove", map[string]any{"id": chardevID})
			return fmt.Errorf("plug the share %s in: %w", sh.Dir, err)
		}
		plugged++
	}
	return nil
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
