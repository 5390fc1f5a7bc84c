package throwaway

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// A short run's refill starts when it ends, not beside it; a long run's
// starts while it goes on; either way once.
func TestRefillStartsOnceAfterAShortRunOrDuringALongOne(t *testing.T) {
	var refills atomic.Int32
	refill := func() { refills.Add(1) }

	var during int32 = -1
	refillAround(time.Hour, refill, func() error {
		during = refills.Load()
		return nil
	})
	if during != 0 || refills.Load() != 1 {
		t.Fatalf("short run: %d refills while it ran, %d in all; want 0 and 1", during, refills.Load())
	}

	refills.Store(0)
	refillAround(10*time.Millisecond, refill, func() error {
		deadline := time.Now().Add(5 * time.Second)
		for refills.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		during = refills.Load()
		return nil
	})
	if during != 1 || refills.Load() != 1 {
		t.Fatalf("long run: %d refills while it ran, %d in all; want 1 and 1", during, refills.Load())
	}
}

// A run's notes say what its clone was made from, and where its traffic
// is: here for a clone on this machine, in the namespace's egress proxy
// for one on a cluster, whose snapshot is none.
func TestNotesSayWhereTheCloneCameFrom(t *testing.T) {
	local := &instance.Config{Name: "box"}
	kube := &instance.Config{Name: "box", Backend: instance.BackendKubeVirt, Cluster: &instance.Cluster{Namespace: "team-a"}}
	info := &audit.RunInfo{Stats: audit.Stats{Flows: 3, Blocked: 1, BytesOut: 2048}}
	for _, c := range []struct {
		cfg        *instance.Config
		snap       string
		from, ends string
	}{
		{local, "base", "from snapshot base", "run 0a1b2c3d ended (exit 2); box-rm-0a1b2c3d deleted; network: 3 flows, 1 blocked, 2 KiB out (`cowork proxy --runs --name box`)"},
		{kube, "", "its disk cloned from box's", "run 0a1b2c3d ended (exit 2); box-rm-0a1b2c3d deleted; its traffic is in the audit log of namespace team-a's egress proxy, its run in `cowork proxy --runs --name box`"},
	} {
		clone := *c.cfg
		clone.Name = "box-rm-0a1b2c3d"
		tw := &cowork.Throwaway{Instance: &cowork.Instance{Name: clone.Name, Config: &clone}, Parent: &cowork.Instance{Name: "box", Config: c.cfg}, ID: "0a1b2c3d", Snapshot: c.snap}
		if got := madeFrom(tw); got != c.from {
			t.Errorf("made from %q, want %q", got, c.from)
		}
		if got := endedNote(tw, 2, info); got != c.ends {
			t.Errorf("ended:\n%s\nwant\n%s", got, c.ends)
		}
	}
}
