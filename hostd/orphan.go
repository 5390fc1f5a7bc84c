package hostd

import (
	"context"
	"os"
	"syscall"
	"time"
)

// A throwaway clone's VM serves one run (`cowork exec --rm`), whose CLI
// holds the flock of the clone's claim file and deletes the clone when
// the run ends. A CLI killed outright (SIGKILL, a closed terminal's
// SIGHUP) deletes nothing: its kernel-held lock goes, and the claim's pid
// stays, marking the clone used. Its hostd sees that and powers the VM
// off, rather than run it until someone reaps it.

// orphanPoll is how often a throwaway clone's hostd looks at its claim.
var orphanPoll = 2 * time.Second

// watchClaim stops the VM once the clone's claim names a run and no one
// holds it. A free pool clone (a claim naming no run) is left running:
// it waits for its run.
func (d *Daemon) watchClaim(ctx context.Context) {
	if d.cfg.Throwaway == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.vm.Done():
			return
		case <-time.After(orphanPoll):
		}
		if orphaned(d.paths.Claim()) {
			d.log.Warn("the run that took this throwaway clone is gone; stopping its VM", "claim", d.paths.Claim())
			d.requestStop(stopRequest{force: true})
			return
		}
	}
}

// orphaned says whether the claim file at path names a run that no
// longer holds it. It takes a shared lock for a moment, which a claimer's
// exclusive one excludes: a claimer then tries the next clone, and this
// one looks again at its next poll.
func orphaned(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return false // held: its run (or its filler) is alive
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	var b [1]byte
	n, _ := f.ReadAt(b[:], 0)
	return n > 0
}
