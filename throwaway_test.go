package cowork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/units"
)

// newParent makes the stopped, provisioned instance box with a small raw
// disk: what a throwaway run clones.
func newParent(t *testing.T) *Instance {
	t.Helper()
	inst := openNew(t, instance.Config{Name: "box", CPUs: 1, Memory: units.GiB, Disk: units.MiB, Arch: "arm64", Boot: instance.BootEFI})
	if err := os.WriteFile(inst.Paths.Disk(), []byte("the disk of box"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(inst.Paths.Disk(), int64(units.MiB)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inst.Paths.Provisioned(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return inst
}

// newParentWithBase is newParent with its snapshot base, which its
// throwaway runs clone.
func newParentWithBase(t *testing.T) (*Instance, string) {
	t.Helper()
	parent := newParent(t)
	snap, err := parent.throwawayBase("", nil)
	if err != nil {
		t.Fatal(err)
	}
	return parent, snap
}

// poolClone makes a clone of parent's snapshot as a filler would, and
// makes it hot (a stand-in hostd, ready) when hot.
func poolClone(t *testing.T, parent *Instance, snap string, hot bool) *Throwaway {
	t.Helper()
	c, err := parent.makeThrowaway(snap, false)
	if err != nil {
		t.Fatal(err)
	}
	c.claim.Release()
	if hot {
		instancetest.Running(t, c.Paths, true)
	}
	return c
}

// readRuns is the parent's runs log, parsed as `cowork proxy --runs`
// reads it.
func readRuns(t *testing.T, p instance.Paths) (recs []*audit.Record, skipped int) {
	t.Helper()
	skipped, err := audit.Stream(context.Background(), p.Runs(), time.Time{}, false, func(r *audit.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, skipped
}

// A throwaway run of a stopped instance with no snapshot takes one, named
// base; it takes a hot clone from the pool at once. Discarding it powers
// the clone off, deletes it, and leaves in the parent's runs log the
// clone's network records, marked with the run's id (whatever id or run
// the clone's log claimed), then the run's own record.
func TestThrowawayRunFromThePool(t *testing.T) {
	parent := newParent(t)
	var notes []string
	snap, err := parent.throwawayBase("", func(s string) { notes = append(notes, s) })
	if err != nil || snap != BaseSnapshot || len(notes) != 1 || !strings.Contains(notes[0], "took snapshot base") {
		t.Fatalf("base of a stopped instance without snapshots: %q %v, notes %q", snap, err, notes)
	}
	hot := poolClone(t, parent, snap, true)

	tw, err := parent.Throwaway(context.Background(), ThrowawayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tw.Name != hot.Name || tw.Ready != ReadyHot || tw.Snapshot != BaseSnapshot || tw.Parent.Name != "box" {
		t.Fatalf("took %s (%s of %s), want the hot clone %s", tw.Name, tw.Ready, tw.Snapshot, hot.Name)
	}
	if tw.Config.Throwaway == nil || tw.Config.Throwaway.Parent != "box" || tw.Config.Workspace != parent.Config.Workspace {
		t.Errorf("the clone's config: %+v", tw.Config)
	}
	if _, err := claim(tw.Instance, false); !errors.Is(err, instance.ErrLocked) {
		t.Errorf("the run's clone could be claimed again: %v", err)
	}
	// What the clone's hostd logged, one record forged to look like a
	// run of its own.
	log := `{"time":"2026-12-05T10:00:00Z","kind":"tcp","verdict":"allow","name":"example.com","dst":"93.184.216.34:443","bytes_out":100,"bytes_in":2000}
{"time":"2026-12-05T10:00:01Z","kind":"tcp","verdict":"deny","dst":"127.0.0.1:22","bytes_out":0,"bytes_in":0,"run_id":"forged","run_info":{"instance":"x","snapshot":"y","ready":"hot","what":"exec","command":"rm -rf /","exit_code":0,"network":{"flows":0,"blocked":0,"dns_queries":0,"bytes_out":0,"bytes_in":0}}}
not json
`
	if err := os.WriteFile(tw.Paths.NetworkLog(), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	long := "make test" + strings.Repeat("é", maxRunCommand)
	info, err := tw.Discard(context.Background(), RunResult{What: "exec", Command: long, ExitCode: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tw.Paths.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clone's folder is left: %v", err)
	}
	if info.Stats.Flows != 2 || info.Stats.Blocked != 1 || info.Stats.BytesIn != 2000 || info.Dropped != 1 {
		t.Errorf("run info %+v", info)
	}
	recs, skipped := readRuns(t, parent.Paths)
	if len(recs) != 3 || skipped != 0 {
		t.Fatalf("runs log: %d records, %d skipped", len(recs), skipped)
	}
	for _, r := range recs[:2] {
		if r.RunID != tw.ID || r.Run != nil || r.Kind != audit.KindTCP {
			t.Errorf("a copied record: %+v", r)
		}
	}
	end := recs[2]
	if end.Kind != audit.KindRun || end.RunID != tw.ID || end.Run == nil || end.Run.ExitCode != 3 || end.Run.Command != cut(long, maxRunCommand) || !strings.HasSuffix(end.Run.Command, "é…") || len(end.Run.Command) > maxRunCommand+len("…") || end.Run.Instance != tw.Name || end.Run.Ready != ReadyHot || end.DurationMs <= 0 {
		t.Errorf("the run's record: %+v %+v", end, end.Run)
	}
}

// A clone whose run died (its claim names a pid, and no one holds it) is
// deleted, never given to another run; one that another process holds is
// left alone, and neither is taken.
func TestThrowawayNeverReusesAClone(t *testing.T) {
	parent := newParent(t)
	if _, err := parent.Snapshot("old"); err != nil {
		t.Fatal(err)
	}
	if _, err := parent.Snapshot("base"); err != nil {
		t.Fatal(err)
	}
	snap, err := parent.throwawayBase("", nil)
	if err != nil || snap != "base" {
		t.Fatal(snap, err)
	}
	used := poolClone(t, parent, snap, true)
	if err := os.WriteFile(used.Paths.Claim(), []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy := poolClone(t, parent, snap, true)
	held, err := claim(busy.Instance, true)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	other := poolClone(t, parent, "old", true)

	if got := parent.claimReady(context.Background(), snap); got != nil {
		t.Fatalf("took %s (%s)", got.Name, got.Ready)
	}
	gone := parent.reapPool(context.Background(), false)
	if len(gone) != 1 || gone[0] != used.Name {
		t.Errorf("reaped %q, want only %s", gone, used.Name)
	}
	states := map[string]string{}
	clones, err := parent.PoolClones()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clones {
		states[c.Name] = c.State
	}
	if len(states) != 2 || states[busy.Name] != PoolBusy || states[other.Name] != PoolHot {
		t.Errorf("pool after the reap: %v", states)
	}
	// A fill's reap also drops free clones of another snapshot.
	if err := parent.SetPoolSettings(PoolSettings{Size: 0}); err != nil {
		t.Fatal(err)
	}
	if gone := parent.reapPool(context.Background(), true); len(gone) != 1 || gone[0] != other.Name {
		t.Errorf("a fill's reap: %q, want %s", gone, other.Name)
	}
}

// What may not be a throwaway's parent, or base, is refused with what to
// do instead.
func TestThrowawayRefusals(t *testing.T) {
	parent := newParent(t)
	if _, err := parent.throwawayBase("nope", nil); err == nil {
		t.Error("a missing snapshot was accepted")
	}
	if _, err := parent.throwawayBase("../x", nil); err == nil {
		t.Error("a bad snapshot name was accepted")
	}
	instancetest.Running(t, parent.Paths, true)
	_, err := parent.throwawayBase("", nil)
	if err == nil || !strings.Contains(err.Error(), "cowork snapshot create base --name box") {
		t.Errorf("a running instance without snapshots: %v", err)
	}

	clone := *parent
	cfg := *parent.Config
	cfg.Throwaway = &instance.Throwaway{Parent: "box", Snapshot: "base"}
	clone.Config = &cfg
	if _, err := clone.Throwaway(context.Background(), ThrowawayOptions{}); err == nil || !strings.Contains(err.Error(), "run from box") {
		t.Errorf("a throwaway of a throwaway: %v", err)
	}
	if err := clone.SetPoolSettings(PoolSettings{Size: 1}); err == nil {
		t.Error("a throwaway clone was given a pool")
	}
	for _, n := range []int{-1, MaxPoolSize + 1} {
		if err := parent.SetPoolSettings(PoolSettings{Size: n}); err == nil {
			t.Errorf("pool size %d was accepted", n)
		}
	}
	want := PoolSettings{Size: 2, Hot: true, Snapshot: "base"}
	if err := parent.SetPoolSettings(want); err != nil {
		t.Fatal(err)
	}
	if got, err := parent.PoolSettings(); err != nil || got != want {
		t.Errorf("pool settings read back as %+v %v", got, err)
	}
}

// One run's clone may log without end (the guest makes the traffic): what
// a run adds to its parent's log is capped, the rest counted; a flood of
// denials and DNS cannot crowd out the flows that went out after it.
func TestRunRecordIsBounded(t *testing.T) {
	parent := newParent(t)
	cp := instance.Paths(t.TempDir())
	f, err := os.Create(cp.NetworkLog())
	if err != nil {
		t.Fatal(err)
	}
	const denials, flows = 60_000, 100
	for k := 0; k < denials; k++ {
		fmt.Fprintf(f, `{"time":"2026-12-05T10:00:00Z","kind":"udp","verdict":"deny","dst":"10.0.0.1:%d","bytes_out":1,"bytes_in":0}`+"\n", k%65536)
	}
	for k := 0; k < flows; k++ {
		fmt.Fprintf(f, `{"time":"2026-12-05T10:00:01Z","kind":"tcp","verdict":"allow","name":"exfil.example","dst":"203.0.113.9:443","bytes_out":1000,"bytes_in":0}`+"\n")
	}
	f.Close()
	info := &audit.RunInfo{What: "exec"}
	if err := appendRun(parent.Paths, cp, "abcd1234", time.Now(), info, errors.New("cut short "+strings.Repeat("x", 4*maxRunCommand))); err != nil {
		t.Fatal(err)
	}
	recs, _ := readRuns(t, parent.Paths)
	kept, allowed := int64(len(recs)-1), 0
	for _, r := range recs {
		if r.Name == "exfil.example" {
			allowed++
		}
	}
	if info.Stats.Flows != denials+flows || info.Dropped == 0 || kept+info.Dropped != denials+flows || allowed != flows {
		t.Errorf("counted %d flows, kept %d (%d of the allowed %d), dropped %d", info.Stats.Flows, kept, allowed, flows, info.Dropped)
	}
	if st, err := os.Stat(parent.Paths.Runs()); err != nil || st.Size() > maxRunBytes+8192 {
		t.Errorf("the runs log takes %d bytes for one run (cap %d): %v", st.Size(), maxRunBytes, err)
	}
	last := recs[len(recs)-1]
	if last.Kind != audit.KindRun || !strings.HasPrefix(last.Error, "cut short") || len(last.Error) > maxRunCommand+len("…") {
		t.Errorf("the last record: %s %d bytes of error", last.Kind, len(last.Error))
	}
	b, _ := json.Marshal(last)
	if !strings.Contains(string(b), fmt.Sprintf(`"dropped":%d`, info.Dropped)) {
		t.Errorf("the run's record does not say what was dropped: %.300s", b)
	}
}

// Deleting an instance deletes its pool's free clones (VMs of their own),
// and leaves one in a run to that run.
func TestDeleteTakesItsPool(t *testing.T) {
	parent, snap := newParentWithBase(t)
	free := poolClone(t, parent, snap, true)
	busy := poolClone(t, parent, snap, false)
	held, err := claim(busy.Instance, true)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if _, err := parent.Delete(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(free.Name); err == nil {
		t.Errorf("the free clone %s outlived its parent", free.Name)
	}
	if _, err := Open(busy.Name); err != nil {
		t.Errorf("the clone in a run was deleted: %v", err)
	}
}

// A run that finds no clone ready but one being made waits for it rather
// than boot its own.
func TestThrowawayWaitsForTheCloneBeingMade(t *testing.T) {
	parent, snap := newParentWithBase(t)
	making, err := parent.makeThrowaway(snap, false) // claimed, as a filler holds it
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := poolState(making.Instance); st != PoolMaking {
		t.Fatalf("a clone being made is %s", st)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		instancetest.Running(t, making.Paths, true)
		making.claim.Release()
	}()
	tw, err := parent.Throwaway(context.Background(), ThrowawayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Discard(context.Background(), RunResult{})
	if tw.Name != making.Name || tw.Ready != ReadyHot {
		t.Errorf("took %s (%s), want %s once made", tw.Name, tw.Ready, making.Name)
	}
}

// A pool clone carries the settings its parent had when it was made: once
// the parent's change (a stricter network policy), no run gets it, and
// the next run deletes it.
func TestPoolClonesFollowTheParent(t *testing.T) {
	parent, snap := newParentWithBase(t)
	old := poolClone(t, parent, snap, true)
	if !parent.fits(old.Instance, snap) {
		t.Fatal("a fresh clone does not fit its parent")
	}
	parent.Config.Network.Mode = "allowlist"
	if err := parent.Config.Save(parent.Paths.Dir()); err != nil {
		t.Fatal(err)
	}
	parent, err := Open("box")
	if err != nil {
		t.Fatal(err)
	}
	if got := parent.claimReady(context.Background(), snap); got != nil {
		t.Fatalf("a run got %s, made under the old policy", got.Name)
	}
	if gone := parent.reapPool(context.Background(), false); len(gone) != 1 || gone[0] != old.Name {
		t.Errorf("reaped %q, want %s", gone, old.Name)
	}
}

// A clone's folder is renamed away before it is deleted: a claim on its
// old path finds nothing to lock (and makes no file there).
func TestClaimOfADeletedCloneFails(t *testing.T) {
	parent, snap := newParentWithBase(t)
	c := poolClone(t, parent, snap, false)
	lock, err := claim(c.Instance, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := discardClone(context.Background(), c.Instance); err != nil {
		t.Fatal(err)
	}
	lock.Release()
	if _, err := claim(c.Instance, true); err == nil {
		t.Error("a clone was claimed after its deletion")
	}
	if _, err := os.Stat(c.Paths.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clone's folder: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(c.Paths.Dir()), ".gone-*")); len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// A free clone neither running nor suspended is a filler's between its
// boot and its suspend, for a moment, or a dead filler's: it is deleted
// only once older than that moment could be.
func TestStaleClonesGoOnlyOnceOld(t *testing.T) {
	parent, snap := newParentWithBase(t)
	c := poolClone(t, parent, snap, false)
	if st, l := poolState(c.Instance); st != PoolStale {
		t.Fatalf("state %s", st)
	} else {
		l.Release()
	}
	if gone := parent.reapPool(context.Background(), false); len(gone) != 0 {
		t.Fatalf("a fresh clone was reaped: %q", gone)
	}
	c.Config.Created = time.Now().Add(-staleAge - time.Minute)
	if err := c.Config.Save(c.Paths.Dir()); err != nil {
		t.Fatal(err)
	}
	if gone := parent.reapPool(context.Background(), false); len(gone) != 1 || gone[0] != c.Name {
		t.Errorf("reaped %q, want the old %s", gone, c.Name)
	}
}

// suspendedClone is poolClone with a saved guest, as a warm clone is.
func suspendedClone(t *testing.T, parent *Instance, snap string) *Throwaway {
	t.Helper()
	c := poolClone(t, parent, snap, false)
	if err := os.MkdirAll(c.Paths.Suspend(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := savestate.Write(c.Paths.Suspend(), &savestate.Manifest{Saved: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return c
}

// A pool clone whose hostd stands by (its saved guest loaded and paused)
// is a warm clone, not a hot one; a run takes it as such, and its start
// wakes it.
func TestAStandbyCloneIsWarmAndWokenByItsRun(t *testing.T) {
	parent, snap := newParentWithBase(t)
	c := suspendedClone(t, parent, snap)
	h := instancetest.StandingBy(t, c.Paths)
	if st := peekState(c.Instance); st != PoolWarm {
		t.Fatalf("a standing-by clone is %s, want %s", st, PoolWarm)
	}
	if n := parent.readyClones(snap, PoolHot); n != 0 {
		t.Errorf("%d hot clones counted, want none", n)
	}
	hot := poolClone(t, parent, snap, true)
	if st := peekState(hot.Instance); st != PoolHot {
		t.Errorf("a running clone with no saved state is %s, want %s", st, PoolHot)
	}
	// A run takes the hot one first; the standby stays for the next.
	if tw, err := parent.Throwaway(context.Background(), ThrowawayOptions{}); err != nil || tw.Name != hot.Name {
		t.Fatalf("the first run took %v (%v), want the hot clone", tw, err)
	} else if _, err := tw.Discard(context.Background(), RunResult{What: "exec", Command: "true"}); err != nil {
		t.Fatal(err)
	}
	tw, err := parent.Throwaway(context.Background(), ThrowawayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tw.Name != c.Name || tw.Ready != ReadyWarm || h.Wakes() != 1 {
		t.Errorf("took %s (%s), woken %d times; want %s, warm, woken once", tw.Name, tw.Ready, h.Wakes(), c.Name)
	}
	if _, err := tw.Discard(context.Background(), RunResult{What: "exec", Command: "true"}); err != nil {
		t.Fatal(err)
	}
}

// A running clone whose state is still saved is warm, whatever its hostd
// says yet (a standby still loading): a warm pool's reap keeps it, and a
// hot pool's counts it as no hot one.
func TestALoadingStandbyIsWarm(t *testing.T) {
	parent, snap := newParentWithBase(t)
	c := suspendedClone(t, parent, snap)
	instancetest.Running(t, c.Paths, false)
	if st := peekState(c.Instance); st != PoolWarm {
		t.Fatalf("a running clone with its state saved is %s, want %s", st, PoolWarm)
	}
	if err := parent.SetPoolSettings(PoolSettings{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if gone := parent.reapPool(context.Background(), true); len(gone) != 0 {
		t.Errorf("a warm pool's reap deleted %q", gone)
	}
	if n := parent.readyClones(snap, PoolHot); n != 0 {
		t.Errorf("%d hot clones counted, want none", n)
	}
}
