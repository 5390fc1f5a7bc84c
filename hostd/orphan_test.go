package hostd

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
)

// A throwaway clone's VM runs while its claim is free (a pool clone) or
// held (its run, alive); once the claim names a run that no longer holds
// it (a CLI killed outright), hostd powers it off. An instance that is no
// throwaway is never stopped for a file in its folder.
func TestAnOrphanedThrowawayStops(t *testing.T) {
	defer func(p time.Duration) { orphanPoll = p }(orphanPoll)
	orphanPoll = 20 * time.Millisecond
	h := newHostdTest(t, machinetest.Guest{})
	h.cfg.Throwaway = &instance.Throwaway{Parent: "box", Snapshot: "base"}
	if err := h.cfg.Save(h.paths.Dir()); err != nil {
		t.Fatal(err)
	}
	r, _ := h.ready(t)
	// Free (a pool clone waiting, its claim empty and unlocked), then
	// held by a live run with its pid in it.
	if err := os.WriteFile(h.paths.Claim(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * orphanPoll)
	if st := r.status(); !st.Ready {
		t.Fatalf("a free pool clone stopped: %+v", st)
	}
	lock, err := instance.LockFile(h.paths.Claim(), false)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * orphanPoll)
	if _, err := lock.File().WriteString("4242\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * orphanPoll)
	if st := r.status(); !st.Ready {
		t.Fatalf("the clone stopped while its run held it: %+v", st)
	}
	lock.Release() // the run is killed
	if err := r.wait(); err != nil {
		t.Fatalf("hostd: %v", err)
	}
	if !strings.Contains(h.log.String(), "the run that took this throwaway clone is gone") {
		t.Errorf("hostd's log does not say why it stopped:\n%s", h.log.String())
	}

	// Not a throwaway: the same file changes nothing.
	h2 := newHostdTest(t, machinetest.Guest{})
	r2, _ := h2.ready(t)
	if err := os.WriteFile(h2.paths.Claim(), []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * orphanPoll)
	if st := r2.status(); !st.Ready {
		t.Errorf("an instance that is no throwaway stopped: %+v", st)
	}
}
