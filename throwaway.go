package cowork

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/image/snapshot"
	"github.com/coworkhq/cowork/internal/rotlog"
)

// A throwaway run (`cowork exec --rm`, `cowork ask --rm`) happens in a
// clone of one of an instance's snapshots, deleted when the run ends:
// what the run wrote to /workspace, the parent's shared folder, stays;
// the rest goes with the clone. The parent keeps one line per run in its
// runs.jsonl, after the network records of the run's clone (each tagged
// with the run's id), so the clone's audit outlives it.
//
// The clone comes from the parent's pool when one is ready there (pool.go:
// hot, running; or warm, suspended and resumed in under a second), else it
// is made and booted for the run (cold). A clone is taken by locking its
// claim file and writing the taker's pid in it: the lock says it is in use
// (the kernel drops it with the process), the pid that it was used, so a
// clone whose run died is deleted, never handed to another run.
//
// An instance on a cluster has no snapshots and no pool: its clone is a
// new instance there whose disk the cluster clones from the parent's
// (clusterclone.go), made and booted for the run.

// How a throwaway's clone was had.
const (
	ReadyHot  = "hot"  // running, from the pool
	ReadyWarm = "warm" // suspended, from the pool: resumed
	ReadyCold = "cold" // made and booted for the run
)

// BaseSnapshot is the snapshot a throwaway run takes of an instance that
// has none, when it is stopped.
const BaseSnapshot = "base"

// Bounds on what one run adds to its parent's runs.jsonl from the clone's
// network log, which the guest feeds: past them records are counted, not
// copied.
const (
	maxRunBytes = 8 << 20 // half for the flows that went out, half for the rest
	// maxRunCommand bounds the command (or prompt, which may come whole
	// from stdin) on a run's record.
	maxRunCommand = 1024
)

// ThrowawayOptions say where a throwaway run's clone comes from.
type ThrowawayOptions struct {
	// Snapshot is the parent's snapshot to clone: "" for the pool's, else
	// the one the parent's disk sits on (its latest), else BaseSnapshot,
	// taken then if the parent is stopped.
	Snapshot string
	// Progress follows the clone's boot or resume.
	Progress func(*Event)
	// Note gets what the user should know (a snapshot taken for the run).
	Note func(string)
}

// Throwaway is a clone taken for one run. Discard ends it.
type Throwaway struct {
	*Instance
	Parent   *Instance
	ID       string // the run's, the end of the clone's name
	Snapshot string
	Ready    string
	claim    *instance.Lock
	began    time.Time
}

// Throwaway takes a clone of the instance for one run, from its pool or
// made now, and starts it. The caller runs what it wants in it, then
// calls Discard.
func (i *Instance) Throwaway(ctx context.Context, o ThrowawayOptions) (*Throwaway, error) {
	if t := i.Config.Throwaway; t != nil {
		return nil, fmt.Errorf("%s is a throwaway clone of %s: run from %s instead (--name %s)", i.Name, t.Parent, t.Parent, t.Parent)
	}
	if i.Config.Remote() {
		return i.clusterThrowaway(ctx, o)
	}
	pool, err := i.PoolSettings()
	if err != nil {
		return nil, err
	}
	if o.Snapshot == "" {
		o.Snapshot = pool.Snapshot
	}
	snap, err := i.throwawayBase(o.Snapshot, o.Note)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	i.reapPool(ctx, false)
	t := i.claimOrWait(ctx, snap)
	if err := ctx.Err(); err != nil {
		if t != nil {
			t.claim.Release() // claimed for this run, which ends here: a reaper's
		}
		return nil, err
	}
	if t == nil {
		if pool.Size > 0 && o.Note != nil {
			o.Note(fmt.Sprintf("no clone was ready in the pool of %s (its filler's log: %s); making one", i.Name, i.Paths.PoolLog()))
		}
		if t, err = i.makeThrowaway(snap, true); err != nil {
			return nil, err
		}
	}
	t.began = began
	if t.Ready == ReadyHot {
		return t, nil
	}
	err = t.Instance.Start(ctx, o.Progress)
	if err != nil && t.Ready == ReadyWarm && ctx.Err() == nil && !t.Instance.Running() && t.Instance.Saved() != nil {
		// Its standby ended before it ran the guest, which stays saved:
		// a start of its own resumes it from disk.
		err = t.Instance.Start(ctx, o.Progress)
	}
	if err != nil && !errors.Is(err, ErrAlreadyRunning) {
		return nil, t.abandon(ctx, err)
	}
	return t, nil
}

// abandon discards the throwaway whose start failed with err; it returns
// err, with what the discard could not do.
func (t *Throwaway) abandon(ctx context.Context, err error) error {
	if _, derr := t.Discard(ctx, RunResult{ExitCode: -1, Err: err}); derr != nil {
		err = fmt.Errorf("%w; %v", err, derr)
	}
	return fmt.Errorf("throwaway clone %s of %s: %w", t.Name, t.Parent.Name, err)
}

// throwawayBase is the snapshot a throwaway run clones: name if given (it
// must exist), else the one the disk sits on, else the newest, else
// BaseSnapshot taken now of the stopped instance.
func (i *Instance) throwawayBase(name string, note func(string)) (string, error) {
	if name != "" {
		if err := snapshot.ValidName(name); err != nil {
			return "", err
		}
		_, err := snapshot.Load(i.Paths, name)
		return name, err
	}
	all, err := i.Snapshots()
	if err != nil {
		return "", err
	}
	var newest *Snapshot
	for k := range all {
		if all[k].Current {
			return all[k].Name, nil
		}
		if newest == nil || all[k].Created.After(newest.Created) {
			newest = &all[k]
		}
	}
	if newest != nil {
		return newest.Name, nil
	}
	if i.Running() {
		return "", fmt.Errorf("%s has no snapshot for a throwaway run to clone: take one with `cowork snapshot create %s%s` (it pauses %s for a few seconds), or stop %s and run again", i.Name, BaseSnapshot, instance.NameFlag(i.Name), i.Name, i.Name)
	}
	if _, err := i.Snapshot(BaseSnapshot); err != nil {
		return "", fmt.Errorf("take snapshot %s of %s for throwaway runs: %w", BaseSnapshot, i.Name, err)
	}
	if note != nil {
		note(fmt.Sprintf("took snapshot %s of %s for throwaway runs to clone (`cowork snapshot create` a newer one to run from it)", BaseSnapshot, i.Name))
	}
	return BaseSnapshot, nil
}

// The longest names of throwaway clones: an instance's name is at most
// 63 characters, and one on a cluster's at most 40 (it names the
// cluster's objects, with their prefix and suffixes).
const (
	maxCloneName        = 62
	maxClusterCloneName = 40
)

// throwawayName is a new name for a clone of parent: parent-rm-ID, the
// parent's name cut so that it is at most max long.
func throwawayName(parent string, max int) (name, id string) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id = hex.EncodeToString(b[:])
	if n := max - len("-rm-") - len(id); len(parent) > n {
		parent = parent[:n]
	}
	return parent + "-rm-" + id, id
}

// makeThrowaway clones snap into a new throwaway clone and claims it: for
// a run when use, else for the pool (claimed while it is made ready).
func (i *Instance) makeThrowaway(snap string, use bool) (*Throwaway, error) {
	var dst, id string
	s, err := snapshot.Load(i.Paths, snap)
	if err != nil {
		return nil, err
	}
	mark := &instance.Throwaway{Parent: i.Name, Snapshot: snap, Made: s.Created, Settings: i.Config.SettingsDigest()}
	// The claim is taken in the folder before anything else is there: a
	// reaper never takes the clone for a dead run's or filler's.
	var lock *instance.Lock
	onDir := func(dir string) (err error) {
		lock, err = claimIn(instance.Paths(dir), use)
		return err
	}
	var c *Instance
	for try := 0; try < 3; try++ {
		dst, id = throwawayName(i.Name, maxCloneName)
		c, err = i.cloneSnapshot(snap, dst, instance.CloneOptions{Throwaway: mark, OnDir: onDir})
		if err != nil && lock != nil {
			lock.Release()
			lock = nil
		}
		if !errors.As(err, new(*instance.ExistsError)) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("clone snapshot %s of %s: %w", snap, i.Name, err)
	}
	return &Throwaway{Instance: c, Parent: i, ID: id, Snapshot: snap, Ready: ReadyCold, claim: lock}, nil
}

// errUsed is a clone whose claim names a run: never another's.
var errUsed = errors.New("used by a run")

// claim locks c's claim file, without waiting (instance.ErrLocked when
// another process has it), and refuses a clone a run has used. With use,
// it writes this process's pid in it: c is then a run's, for good.
func claim(c *Instance, use bool) (*instance.Lock, error) { return claimIn(c.Paths, use) }

func claimIn(p instance.Paths, use bool) (*instance.Lock, error) {
	lock, err := instance.LockFile(p.Claim(), false)
	if err != nil {
		return nil, err
	}
	// A clone is deleted under its claim, its folder first renamed away
	// (discardClone): a lock got on the file of a folder since gone is
	// no claim.
	held, herr := lock.File().Stat()
	now, nerr := os.Stat(p.Claim())
	if herr != nil || nerr != nil || !os.SameFile(held, now) {
		lock.Release()
		return nil, instance.ErrLocked
	}
	var b [32]byte
	if n, _ := lock.File().ReadAt(b[:], 0); n > 0 {
		lock.Release()
		return nil, errUsed
	}
	if use {
		if _, err := lock.File().WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
			lock.Release()
			return nil, fmt.Errorf("claim %s: %w", p.Dir(), err)
		}
	}
	return lock, nil
}

// discardClone powers the clone c off and deletes it; the caller holds
// its claim. A clone on a cluster has its objects there deleted first:
// while they stay, so does its folder, for `cowork delete` to find. The
// folder is renamed away first, in one step, so that no one finds it
// half deleted (and takes a claim there).
func discardClone(ctx context.Context, c *Instance) error {
	if _, err := c.Stop(ctx, true, 0); err != nil {
		return fmt.Errorf("stop throwaway clone %s: %w", c.Name, err)
	}
	if c.Config.Remote() {
		if err := deleteInCluster(ctx, c.Config); err != nil {
			return fmt.Errorf("delete throwaway clone %s's objects in the cluster (%w); it is left: `cowork delete --force%s` deletes it once the cluster can be reached", c.Name, err, instance.NameFlag(c.Name))
		}
	}
	home, err := instance.Home()
	if err != nil {
		return err
	}
	// Values kept outside the folder (a keychain's entries) are named by
	// the folder: forgotten before it goes.
	instance.ForgetSecrets(c.Config.Secrets, c.Paths)
	var b [4]byte
	_, _ = rand.Read(b[:])
	gone := filepath.Join(home, ".gone-"+c.Name+"-"+hex.EncodeToString(b[:]))
	if err := os.Rename(c.Paths.Dir(), gone); err != nil {
		return fmt.Errorf("delete throwaway clone %s: %w; `cowork delete --force%s` removes it", c.Name, err, instance.NameFlag(c.Name))
	}
	return os.RemoveAll(gone)
}

// RunResult is how a throwaway run ended, for its record.
type RunResult struct {
	What    string // exec or ask
	Command string
	// ExitCode is the command's, -1 when it did not end with one; Err
	// then says why.
	ExitCode int
	Err      error
}

// Discard ends the throwaway: its VM is powered off, its network records
// and a line for the run go to the parent's runs.jsonl, and the clone is
// deleted. It runs to the end even when ctx has ended (a Ctrl-C must not
// leave the clone behind). A clone it could not stop is left, marked used:
// the next throwaway run of the parent deletes it. A clone on a cluster
// has no network log here (the namespace's egress proxy keeps it): its
// run's line is all; one it could not stop or delete there is left for
// `cowork delete --force`, which deletes its objects there too.
func (t *Throwaway) Discard(ctx context.Context, r RunResult) (*audit.RunInfo, error) {
	wait := 2 * time.Minute
	if t.Config.Remote() {
		wait += clusterDeleteTimeout // its objects in the cluster go first
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
	defer cancel()
	defer t.claim.Release()
	_, stopErr := t.Instance.Stop(ctx, true, 0)
	info := &audit.RunInfo{Instance: t.Name, Snapshot: t.Snapshot, Ready: t.Ready, What: r.What, Command: cut(r.Command, maxRunCommand), ExitCode: r.ExitCode}
	var errs []error
	if err := appendRun(t.Parent.Paths, t.Paths, t.ID, t.began, info, r.Err); err != nil {
		errs = append(errs, fmt.Errorf("record the run in %s: %w", t.Parent.Paths.Runs(), err))
	}
	if stopErr != nil {
		left := "the next run of " + t.Parent.Name + " to delete, or "
		if t.Config.Remote() {
			left = "" // no run reaps a clone on a cluster
		}
		errs = append(errs, fmt.Errorf("stop throwaway clone %s: %w; it is left for %s`cowork delete --force%s`", t.Name, stopErr, left, instance.NameFlag(t.Name)))
	} else if err := discardClone(ctx, t.Instance); err != nil {
		errs = append(errs, err)
	}
	return info, errors.Join(errs...)
}

// appendRun copies the network records of the clone in cp to the runs
// log of its parent in pp, each tagged with the run's id, then the run's
// own record; one run's records at a time (RunsLock), at most
// maxRunBytes of them.
func appendRun(pp, cp instance.Paths, id string, began time.Time, info *audit.RunInfo, runErr error) error {
	lock, err := instance.LockFile(pp.RunsLock(), true)
	if err != nil {
		return err
	}
	defer lock.Release()
	log, err := rotlog.Open(pp.Runs(), rotlog.Options{MaxSize: audit.DefaultMaxSize, Keep: audit.DefaultKeep})
	if err != nil {
		return err
	}
	defer log.Close()
	// Two budgets: the flows that went out, and the rest (denials, DNS),
	// so that a guest cannot crowd the first out with the second.
	var size [2]int64
	skipped, err := audit.Stream(context.Background(), cp.NetworkLog(), time.Time{}, false, func(r *audit.Record) error {
		info.Stats.Add(r)
		budget := 1
		if r.Verdict == audit.Allow && r.Kind != audit.KindDNS {
			budget = 0
		}
		r.RunID, r.Run = id, nil
		r.Seq = 0 // the clone's chain, not this log's
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if size[budget]+int64(len(b))+1 > maxRunBytes/2 {
			info.Dropped++
			return nil
		}
		size[budget] += int64(len(b)) + 1
		_, err = log.Write(append(b, '\n'))
		return err
	})
	info.Dropped += int64(skipped)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	end := time.Now()
	rec := audit.Record{Time: end, Kind: audit.KindRun, Start: began, DurationMs: float64(end.Sub(began)) / float64(time.Millisecond), RunID: id, Run: info}
	if runErr != nil {
		rec.Error = cut(runErr.Error(), maxRunCommand)
	}
	b, err := json.Marshal(&rec)
	if err != nil {
		return err
	}
	_, err = log.Write(append(b, '\n'))
	return err
}

// cut shortens s to at most n bytes and a mark, dropping a rune cut in
// two.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
