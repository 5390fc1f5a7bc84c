package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/internal/smallfile"
)

// intent is snapshot.json in the instance's folder: Create writes it
// before the disk moves and removes it last, so that Recover can finish
// (or, before the move, undo) a create that was cut short.
type intent struct {
	Op   string `json:"op"` // "create"
	Meta Meta   `json:"meta"`
}

// cut, in tests, stops a create after the named step as a crash would:
// nothing after it runs, nothing is undone.
var cut = func(step string) bool { return false }

var errCut = errors.New("cut short (test)")

// lock takes the instance's lock for an operation on its snapshots,
// refusing a running or suspended instance, and finishes a create that
// was cut short. The caller releases it.
func lock(p instance.Paths, cfg *instance.Config, what string) (*instance.Lock, error) {
	l, err := instance.TryLock(p)
	if errors.Is(err, instance.ErrRunning) {
		return nil, fmt.Errorf("%s is running; stop it first with `cowork stop%s` to %s", cfg.Name, instance.NameFlag(cfg.Name), what)
	}
	if err != nil {
		return nil, err
	}
	if err := check(p, cfg, what); err != nil {
		l.Release()
		return nil, err
	}
	if _, err := Recover(p, cfg); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// check refuses what would change the disk under a golden-disk capture
// cut short. A saved memory state (a suspended instance) is each
// operation's own concern: Create keeps it in the snapshot, Restore
// replaces it.
func check(p instance.Paths, cfg *instance.Config, what string) error {
	flag := instance.NameFlag(cfg.Name)
	if exists(p.Capture()) {
		return fmt.Errorf("%s has a golden disk capture to finish; start it once with `cowork start%s` first", cfg.Name, flag)
	}
	return nil
}

// Create takes the snapshot name of the stopped instance in p: its disk
// becomes the snapshot's read-only layer (a rename: instant, whatever the
// disk's size) and the instance goes on from a new qcow2 overlay on it.
// Of a suspended instance it keeps the saved guest too (hard links to its
// files, which nothing rewrites): restoring the snapshot resumes it, and
// the instance itself still resumes from its own (hostd accepts an empty
// overlay on the layer its state was saved with).
// cfg becomes qcow2 and is saved. A create cut short at any point leaves
// an instance that Recover (called by the next operation, and by hostd
// before a boot) brings back to a disk with all its data.
func Create(p instance.Paths, cfg *instance.Config, name string) (*Snapshot, error) {
	p = absolute(p)
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if err := Supported(); err != nil {
		return nil, err
	}
	l, err := lock(p, cfg, "take a snapshot")
	if err != nil {
		return nil, err
	}
	defer l.Release()
	dir := Dir(p, name)
	if exists(dir) {
		return nil, fmt.Errorf("%s has a snapshot %s already; remove it (`cowork snapshot rm %s%s`) or choose another name", cfg.Name, name, name, instance.NameFlag(cfg.Name))
	}
	format := cfg.Format()
	disk := p.DiskFor(format)
	st, err := os.Lstat(disk)
	if err != nil {
		return nil, fmt.Errorf("%s's disk: %w", cfg.Name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s's disk %s is not a regular file", cfg.Name, disk)
	}
	m := Meta{Name: name, Created: time.Now().UTC(), Format: format, Size: st.Size()}
	if exists(p.Suspend()) {
		if _, err := savestate.Load(p.Suspend()); err != nil {
			return nil, fmt.Errorf("%s's saved memory cannot be kept in a snapshot (%v); `cowork start --cold%s` discards it", cfg.Name, err, instance.NameFlag(cfg.Name))
		}
		m.Memory = true
	}
	if format == instance.DiskQcow2 {
		info, err := qcow2.ReadInfo(disk)
		if err != nil {
			return nil, fmt.Errorf("%s's disk: %w", cfg.Name, err)
		}
		m.Size = info.Size
		if info.Backing != "" {
			m.Parent, _ = LayerName(p, info.Backing)
		}
	}
	if overlay := p.DiskFor(instance.DiskQcow2); format == instance.DiskRaw && exists(overlay) {
		return nil, fmt.Errorf("%s is in the way of the overlay a snapshot makes; move it away first", overlay)
	}
	if err := os.MkdirAll(p.Snapshots(), 0o700); err != nil {
		return nil, err
	}
	in := intent{Op: "create", Meta: m}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	if err := instance.WriteFileAtomic(p.SnapshotIntent(), b, 0o600); err != nil {
		return nil, err
	}
	if cut("intent") {
		return nil, errCut
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		os.Remove(p.SnapshotIntent())
		return nil, err
	}
	if cut("mkdir") {
		return nil, errCut
	}
	// The saved guest is linked in before the disk moves: a create cut
	// short after that always has it (or none at all, and is undone).
	if m.Memory {
		if err := linkState(p.Suspend(), filepath.Join(dir, memoryName)); err != nil {
			os.RemoveAll(dir)
			os.Remove(p.SnapshotIntent())
			return nil, fmt.Errorf("keep %s's saved memory in snapshot %s: %w", cfg.Name, name, err)
		}
	}
	if err := os.Rename(disk, LayerPath(dir, format)); err != nil {
		os.Remove(dir)
		os.Remove(p.SnapshotIntent())
		return nil, fmt.Errorf("move %s's disk into snapshot %s: %w", cfg.Name, name, err)
	}
	syncDir(p.Dir())
	if cut("rename") {
		return nil, errCut
	}
	if err := finish(p, cfg, in); err != nil {
		return nil, fmt.Errorf("snapshot %s of %s: %w (the next `cowork start` finishes it)", name, cfg.Name, err)
	}
	return Load(p, name)
}

// finish goes on with a create whose disk has moved into the snapshot's
// folder: the layer made read-only, the instance's overlay on it (made
// anew unless the one there is complete and on it), cfg saved, meta.json
// written, the intent removed. Every step can be done again.
func finish(p instance.Paths, cfg *instance.Config, in intent) error {
	dir := Dir(p, in.Meta.Name)
	layer := LayerPath(dir, in.Meta.Format)
	if err := os.Chmod(layer, 0o444); err != nil {
		return err
	}
	if cut("chmod") {
		return errCut
	}
	overlay := p.DiskFor(instance.DiskQcow2)
	os.Remove(overlay + ".tmp") // an interrupted CreateOverlayOn's: we hold the lock
	if info, err := qcow2.ReadInfo(overlay); err == nil && filepath.Clean(info.Backing) == layer {
		// CreateOverlayOn renames a complete image into place: this one is.
	} else if exists(overlay) {
		return fmt.Errorf("%s is in the way of the new overlay on snapshot %s (%v); move it away and start the instance", overlay, in.Meta.Name, err)
	} else {
		if err := qcow2.CreateOverlayOn(overlay, layer, in.Meta.Format, max(int64(cfg.Disk), in.Meta.Size)); err != nil {
			return err
		}
	}
	if cut("overlay") {
		return errCut
	}
	cfg.DiskFormat = instance.DiskQcow2
	if err := cfg.SaveDisk(p.Dir()); err != nil {
		return err
	}
	if cut("config") {
		return errCut
	}
	if in.Meta.Memory {
		// Linked before the disk moved; a folder that lost it (removed by
		// hand) keeps the disk, and says it has no memory.
		if _, err := savestate.Load(filepath.Join(dir, memoryName)); err != nil {
			in.Meta.Memory = false
		}
	}
	b, err := json.MarshalIndent(in.Meta, "", "  ")
	if err != nil {
		return err
	}
	if err := instance.WriteFileAtomic(filepath.Join(dir, metaName), append(b, '\n'), 0o444); err != nil {
		return err
	}
	syncDir(dir)
	if cut("meta") {
		return errCut
	}
	if err := os.Remove(p.SnapshotIntent()); err != nil {
		return err
	}
	syncDir(p.Dir())
	return nil
}

// Recover finishes a create of a snapshot that was cut short, or undoes
// one whose disk had not moved yet, as snapshot.json says; without one it
// does nothing. The caller holds the instance's lock. It returns whether
// cfg changed.
func Recover(p instance.Paths, cfg *instance.Config) (bool, error) {
	p = absolute(p)
	b, err := smallfile.Read(p.SnapshotIntent())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var in intent
	if json.Unmarshal(b, &in) != nil || in.Op != "create" || ValidName(in.Meta.Name) != nil ||
		(in.Meta.Format != instance.DiskRaw && in.Meta.Format != instance.DiskQcow2) {
		return false, fmt.Errorf("instance %s: %s is not a snapshot's record; remove it if the disk is in place", cfg.Name, p.SnapshotIntent())
	}
	dir := Dir(p, in.Meta.Name)
	layer := LayerPath(dir, in.Meta.Format)
	if st, err := os.Lstat(layer); err == nil && st.Mode().IsRegular() {
		before := cfg.Format()
		if err := finish(p, cfg, in); err != nil {
			return false, fmt.Errorf("instance %s: finish snapshot %s: %w", cfg.Name, in.Meta.Name, err)
		}
		return before != cfg.Format(), nil
	}
	// The disk never moved: undo.
	if !exists(p.DiskFor(in.Meta.Format)) {
		return false, fmt.Errorf("instance %s: its disk is neither in its folder nor in snapshot %s; look in %s", cfg.Name, in.Meta.Name, p.Snapshots())
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, err
	}
	return false, os.Remove(p.SnapshotIntent())
}

// linkState makes to a copy of the saved guest in from by hard links: its
// manifest and the files it names, regular files only. A state's files
// are written once and never changed (a resume renames the folder away
// and removes it), so the two folders share them safely. to is made anew,
// complete or not at all.
func linkState(from, to string) error {
	m, err := savestate.Load(from)
	if err != nil {
		return err
	}
	if err := m.CheckFiles(from); err != nil {
		return err
	}
	tmp := to + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	names := []string{savestate.ManifestName}
	for _, f := range m.Files {
		names = append(names, f.Name)
	}
	for _, n := range names {
		if err := os.Link(filepath.Join(from, n), filepath.Join(tmp, n)); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	syncDir(tmp)
	if err := os.RemoveAll(to); err != nil {
		return err
	}
	if err := os.Rename(tmp, to); err != nil {
		return err
	}
	syncDir(filepath.Dir(to))
	return nil
}
