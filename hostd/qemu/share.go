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

// startShareServer starts virtiofsd on the share's socket.
func (v *VM) startShareServer(ctx context.Context) error {
	p, err := startVirtiofsd(ctx, v.cfg.ShareDir, v.run.virtiofs(), v.cfg.ShareUID, v.cfg.ShareGID, v.log)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.virtiofs = p
	v.mu.Unlock()
	return nil
}

// stopShareServer ends virtiofsd, if it runs, and waits until it is reaped.
func (v *VM) stopShareServer() {
	v.mu.Lock()
	p := v.virtiofs
	v.virtiofs = nil
	v.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// DetachShare unplugs the share's device from the running guest and ends
// its virtiofsd: QEMU 7.2 cannot save a guest with a vhost-user-fs device
// attached. The guest must have unmounted the share first (hostd asks its
// agent): what still uses it loses it. The guest's kernel releases the
// device (DEVICE_DELETED) seconds later; a guest that does not within
// shareDetachWait keeps it, and the error says so.
func (v *VM) DetachShare(ctx context.Context) error {
	if v.cfg.ShareDir == "" {
		return errors.New("this VM has no share to detach")
	}
	gone := make(chan struct{})
	v.mu.Lock()
	v.shareGone = gone
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.shareGone = nil
		v.mu.Unlock()
	}()
	if _, err := v.qmp("device_del", map[string]any{"id": shareDeviceID}); err != nil {
		return fmt.Errorf("unplug the share: %w", err)
	}
	wait := time.NewTimer(shareDetachWait)
	defer wait.Stop()
	select {
	case <-gone:
	case <-wait.C:
		return fmt.Errorf("the guest did not release the share's device within %s (is /workspace still mounted in the guest?); it stays attached", shareDetachWait)
	case <-v.Done():
		return errors.New("the VM stopped while the share was being unplugged")
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := v.qmp("chardev-remove", map[string]any{"id": shareChardevID}); err != nil {
		return fmt.Errorf("remove the share's socket from QEMU: %w", err)
	}
	v.stopShareServer()
	return nil
}

// AttachShare plugs the share back into a running guest, behind its root
// port: a new virtiofsd, its socket as a new chardev, the device. The
// guest then sees a new virtiofs device, which hostd's agent mounts (the
// device may take a moment to appear: the mount is to be retried).
func (v *VM) AttachShare(ctx context.Context) (err error) {
	if v.cfg.ShareDir == "" {
		return errors.New("this VM has no share to attach")
	}
	v.mu.Lock()
	attached := v.virtiofs != nil
	v.mu.Unlock()
	if attached {
		return errors.New("the share is attached already")
	}
	if err := v.startShareServer(ctx); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			v.stopShareServer()
		}
	}()
	chardev := map[string]any{
		"id": shareChardevID,
		"backend": map[string]any{"type": "socket", "data": map[string]any{
			"addr":   map[string]any{"type": "unix", "data": map[string]any{"path": v.run.virtiofs()}},
			"server": false,
		}},
	}
	if _, err := v.qmp("chardev-add", chardev); err != nil {
		return fmt.Errorf("connect QEMU to the share's server: %w", err)
	}
	device := map[string]any{
		"driver": "vhost-user-fs-pci", "id": shareDeviceID, "bus": sharePortID,
		"chardev": shareChardevID, "tag": v.cfg.ShareTag,
	}
	if _, err := v.qmp("device_add", device); err != nil {
		_, _ = v.qmp("chardev-remove", map[string]any{"id": shareChardevID})
		return fmt.Errorf("plug the share in: %w", err)
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
