package hostd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// guestShare is a shared folder as the host serves it and the guest
// mounts it: the workspace first, then the config's mounts.
type guestShare struct {
	machine.Share
	Guest string // where the guest mounts it
}

// guestShares are the instance's shares.
func guestShares(cfg *instance.Config) []guestShare {
	shares := []guestShare{{Share: machine.Share{Dir: cfg.Workspace, Tag: instance.ShareTag}, Guest: instance.GuestWorkspace}}
	for i, m := range cfg.Mounts {
		shares = append(shares, guestShare{Share: machine.Share{Dir: m.ResolvedHost(), Tag: instance.MountTag(i), ReadOnly: m.ReadOnly}, Guest: m.Guest})
	}
	return shares
}

// machineShares are the shares as the VM is given them.
func machineShares(cfg *instance.Config) []machine.Share {
	var out []machine.Share
	for _, s := range guestShares(cfg) {
		out = append(out, s.Share)
	}
	return out
}

// mountShares has the guest mount shares (each waits for its device);
// it tries them all and says what failed.
func (d *Daemon) mountShares(ctx context.Context, shares []guestShare) error {
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return errors.New("the guest agent has not connected")
	}
	mctx, cancel := context.WithTimeout(ctx, agentcall.ShareMountWait+agentCallTimeout)
	defer cancel()
	var errs []error
	for _, s := range shares {
		if err := agent.ShareMount(mctx, s.Tag, s.Guest, s.ReadOnly); err != nil {
			errs = append(errs, fmt.Errorf("mount %s at %s in the guest: %w", s.Dir, s.Guest, err))
		}
	}
	return errors.Join(errs...)
}

// mountExtras mounts, on a cold boot, the shares besides the workspace
// (the guest's fstab mounts that one as it boots). A guest that cannot
// runs on without them, with a note saying which and why.
func (d *Daemon) mountExtras(ctx context.Context) {
	shares := guestShares(d.cfg)[1:]
	if len(shares) == 0 {
		return
	}
	if err := d.mountShares(ctx, shares); err != nil {
		d.log.Error("the guest runs without some of its mounts", "err", err)
		d.events.emit(controlwire.PhaseNote, "the guest could not mount all its folders", err)
	}
}

// releaseShares has the guest let go of every share before a save: none
// may stay mounted. When one is busy (and not force) or the guest fails,
// the shares released so far are mounted again and the error says what
// to do.
func (d *Daemon) releaseShares(ctx context.Context, agent *agentrpc.Client, force bool) error {
	var released []guestShare
	undo := func() {
		if err := d.mountShares(ctx, released); err != nil {
			d.log.Error("a share released for a suspend that did not happen is not back", "err", err)
			d.events.emit(controlwire.PhaseNote, "the guest lost a mount; `cowork stop` and `cowork start` bring it back", err)
		}
	}
	for _, s := range guestShares(d.cfg) {
		rctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
		rel, err := agent.ShareRelease(rctx, s.Guest, force)
		cancel()
		if err != nil {
			undo()
			return controlwire.Errorf(controlwire.CodeUnavailable, "cannot suspend: the guest did not let go of %s: %v", s.Guest, err)
		}
		if !rel.Unmounted {
			undo()
			return controlwire.Errorf(controlwire.CodeFailedPrecondition, "%s", shareBusy(s.Guest, rel))
		}
		released = append(released, s)
	}
	return nil
}

// remountShare gives the guest its shares back after a suspend that did
// not happen: plugged in again when they were unplugged, then mounted.
func (d *Daemon) remountShare(ctx context.Context, saver machine.Saver, plug bool) {
	if err := d.attachShare(ctx, saver, plug); err != nil {
		d.log.Error("the guest runs without its shares", "err", err)
		d.events.emit(controlwire.PhaseNote, "the guest lost "+instance.GuestWorkspace+" (and its other mounts); `cowork stop` and `cowork start` bring them back", err)
	}
}

// attachShare plugs the shares in (plug) and has the guest mount them.
func (d *Daemon) attachShare(ctx context.Context, saver machine.Saver, plug bool) error {
	if plug {
		if err := saver.AttachShare(ctx); err != nil {
			return fmt.Errorf("plug the shares in: %w", err)
		}
	}
	return d.mountShares(ctx, guestShares(d.cfg))
}

// shareBusy says which guest processes keep a suspend from unmounting the
// share at dir, and what to do.
func shareBusy(dir string, rel *agentcall.ShareReleaseReply) string {
	var names []string
	for _, u := range rel.Users {
		names = append(names, fmt.Sprintf("%s %d", termsafe.Line(u.Comm), u.PID))
	}
	n := len(rel.Users) + rel.More
	list := strings.Join(names, ", ")
	if rel.More > 0 {
		list += fmt.Sprintf(" and %d more", rel.More)
	}
	what, them := "processes use", "them"
	if n == 1 {
		what, them = "process uses", "it"
	}
	return fmt.Sprintf("cannot suspend: %d guest %s %s (%s), and the share cannot stay mounted across a save; end %s (leave %s in your shells), or `cowork suspend --force`, which unmounts it under %s", n, what, dir, list, them, dir, them)
}
