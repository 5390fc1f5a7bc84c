package hostd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
)

// A warm pool clone's hostd runs with --standby (Options.Standby): it
// does all of a resume that needs no guest running (the network up, QEMU
// started, the saved memory copied in, the devices loaded) and holds the
// guest paused until a run takes the clone and calls Wake. The saved
// state stays where it is until then, so a standby that ends (stopped,
// killed, the host restarted) leaves the clone suspended on disk, and the
// next start resumes it from there as any suspended instance. While it
// waits it costs the guest's saved memory, resident, and an idle QEMU;
// no CPU.

// errNothingToHold is a standby's end when the instance has no saved
// guest it can resume: it boots nothing cold.
var errNothingToHold = errors.New("standby: no saved guest this host can resume")

// holdOnly is startOrResume for a standby: resume the saved guest, never
// boot cold; a state it cannot resume is left as it is for the next
// start to judge (and set aside) in the open.
func (d *Daemon) holdOnly(ctx context.Context, vm machine.Machine, saved *machine.Saved, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", errNothingToHold, err)
	case saved == nil:
		return errNothingToHold
	}
	return d.resume(ctx, vm, saved)
}

// vmEnd is what awaitWake watches of the VM: its end.
type vmEnd interface {
	Done() <-chan struct{}
	Err() error
}

// awaitWake holds the loaded, paused guest until Wake; a stop (ctx), the
// VM's end, or its reason going (a pool clone whose run died before its
// wake, or whose parent was deleted) cuts it short, the state kept.
func (d *Daemon) awaitWake(ctx context.Context, vm vmEnd) error {
	d.mu.Lock()
	d.standingBy = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.standingBy = false
		d.mu.Unlock()
	}()
	d.log.Info("standing by: the saved guest is loaded and paused until a run takes it")
	for {
		select {
		case <-d.wake:
			// A stop or the VM's end at the same moment wins: the state
			// must not be retired for a guest that will not run.
			if err := ctx.Err(); err != nil {
				return err
			}
			select {
			case <-vm.Done():
				return fmt.Errorf("the VM ended while it stood by: %v", vm.Err())
			default:
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-vm.Done():
			return fmt.Errorf("the VM ended while it stood by: %v", vm.Err())
		case <-time.After(orphanPoll):
			if err := d.standbyReason(); err != nil {
				return err
			}
		}
	}
}

// standbyReason says why a throwaway clone's standby should end: its run
// took it and died before waking it, or its parent is gone. Nil while it
// still waits for a run (and always for an instance of the user's).
func (d *Daemon) standbyReason() error {
	t := d.cfg.Throwaway
	if t == nil {
		return nil
	}
	if orphaned(d.paths.Claim()) {
		return errors.New("the run that took this clone is gone: standing by no longer")
	}
	if p, err := instance.PathsFor(t.Parent); err == nil {
		if _, err := os.Stat(p.Config()); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the clone's parent %s is gone: standing by no longer", t.Parent)
		}
	}
	return nil
}

// Wake runs the guest a standby holds (CallWake). One that comes while
// the guest is still loading takes effect as soon as it is loaded.
func (s *controlServer) Wake(context.Context) error {
	d := s.d
	if !d.standby {
		return controlwire.Errorf(controlwire.CodeFailedPrecondition, "%s is not standing by: there is nothing to wake", d.name)
	}
	d.wakeOnce.Do(func() { close(d.wake) })
	return nil
}

// warmExecWait bounds warmExec's exec.
const warmExecWait = 2 * time.Second

// warmExec runs `true` once in a resumed guest, beside the rest of its
// resume and whatever runs first. A resumed guest's first exec runs code
// (the agent's, the kernel's fork and exec) that an emulated guest must
// translate again: under TCG here it takes 0.15-0.2 s where the next
// takes 0.09 s. Run as the agent first answers, while the share is being
// mounted, it has that mostly done by the time the user's first command
// comes: `exec --rm true` from a warm clone took 0.54 s against 0.60 s
// without it (medians of 6; waiting for it before ready took 0.63 s),
// and the first `exec true` after `cowork start` resumed a suspended
// guest 0.10 s against 0.16 s. A cold boot has no such cost to save: its
// guest translated the code as it booted. Whether it works does not
// matter. It is hostd's own call to the agent, in no exec's record.
func (d *Daemon) warmExec(ctx context.Context, vm machine.Machine) {
	ctx, cancel := context.WithTimeout(ctx, warmExecWait)
	defer cancel()
	c, err := agentclient.New(func(ctx context.Context) (net.Conn, error) { return vm.DialAgent(ctx) })
	if err != nil {
		return
	}
	defer c.Close()
	began := time.Now()
	if _, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"true"}, Dir: "/"}); err != nil {
		d.log.Info("the warm-up exec after the resume failed", "err", err)
		return
	}
	d.log.Info("warmed the guest's exec path", "took", time.Since(began))
}
