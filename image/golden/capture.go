package golden

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/internal/dirsync"
	reflinkpkg "github.com/coworkhq/cowork/internal/reflink"
	"github.com/coworkhq/cowork/internal/smallfile"
)

// reflink clones src to dst (which must not exist) sharing blocks, or
// returns errors.ErrUnsupported when the file system cannot. A variable
// so that tests can take the reflink path on file systems without it.
var reflink = reflinkpkg.File

// intent is capture.json in the instance's folder: a capture that moves
// the instance's disk into the store writes it first and removes it last,
// so that Recover can finish or undo one that was cut short.
type intent struct {
	Key  string `json:"key"`
	Tmp  string `json:"tmp"` // the store's folder being filled
	Meta Meta   `json:"meta"`
}

// Capture makes the disk of a stopped instance (its caller holds the
// instance's lock) the golden disk meta.Key: a reflink copy where the file
// system can make one, else the disk itself moves into the store and the
// instance gets a qcow2 overlay on it. cfg is updated and saved. A golden
// disk with that key already there is returned as is, the instance left
// untouched: another init published it first.
func (s Store) Capture(p instance.Paths, cfg *instance.Config, meta Meta) (*Golden, error) {
	if !ValidKey(meta.Key) {
		return nil, fmt.Errorf("golden disk key %q: want 64 hex digits", meta.Key)
	}
	if cfg.Format() != instance.DiskRaw {
		return nil, fmt.Errorf("instance %s already has a %s disk on a golden disk; nothing to capture", cfg.Name, cfg.Format())
	}
	unlock, err := s.lock(syscall.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if g, err := s.Lookup(meta.Key); err != nil || g != nil {
		return g, err
	}
	disk := p.Disk()
	st, err := lstatRegular(disk)
	if err != nil {
		return nil, fmt.Errorf("instance %s's disk: %w", cfg.Name, err)
	}
	meta.Size = st.Size()
	tmp, err := os.MkdirTemp(s.Dir, tmpDir+meta.Key[:12]+"-")
	if err != nil {
		return nil, err
	}
	switch err := reflink(disk, filepath.Join(tmp, diskName)); {
	case err == nil:
		g, err := s.publish(tmp, meta)
		var taken *takenError
		if errors.As(err, &taken) {
			// Another capture published this key meanwhile: keep its disk,
			// leave the instance as it was.
			os.RemoveAll(tmp)
			return taken.g, nil
		}
		if err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		cfg.Golden = g.Key
		return g, cfg.SaveDisk(p.Dir())
	case !errors.Is(err, errors.ErrUnsupported):
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("clone %s's disk: %w", cfg.Name, err)
	}
	// No reflinks: the disk moves into the store (a rename, within
	// $COWORK_HOME) and the instance goes on from an overlay on it.
	b, err := json.Marshal(intent{Key: meta.Key, Tmp: tmp, Meta: meta})
	if err != nil {
		return nil, err
	}
	if err := instance.WriteFileAtomic(p.Capture(), b, 0o600); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(disk, filepath.Join(tmp, diskName)); err != nil {
		os.RemoveAll(tmp)
		os.Remove(p.Capture())
		return nil, fmt.Errorf("move %s's disk into the golden disks: %w", cfg.Name, err)
	}
	return s.finishMove(p, cfg, intent{Key: meta.Key, Tmp: tmp, Meta: meta})
}

// finishMove goes on with a capture whose disk has left the instance for
// in.Tmp: it publishes it (or gives it back when another capture won),
// gives the instance its overlay and saves cfg, then drops the intent.
func (s Store) finishMove(p instance.Paths, cfg *instance.Config, in intent) (*Golden, error) {
	g, err := s.publish(in.Tmp, in.Meta)
	var taken *takenError
	if errors.As(err, &taken) {
		// Another capture published this key meanwhile: the instance keeps
		// its own disk, as if it had never moved.
		// publish made it read-only: writable again before it goes back,
		// so that a crash in between leaves no read-only instance disk.
		moved := filepath.Join(in.Tmp, diskName)
		if err := os.Chmod(moved, 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(moved, p.Disk()); err != nil {
			return nil, fmt.Errorf("give %s its disk back from %s: %w", cfg.Name, in.Tmp, err)
		}
		os.RemoveAll(in.Tmp)
		return taken.g, os.Remove(p.Capture())
	}
	if err != nil {
		return nil, err
	}
	if _, err := s.finishOverlay(p, cfg, g); err != nil {
		return nil, fmt.Errorf("instance %s: make its disk on the golden disk: %w", cfg.Name, err)
	}
	return g, os.Remove(p.Capture())
}

// takenError is a publish that found the key published by another.
type takenError struct{ g *Golden }

func (e *takenError) Error() string { return "golden disk " + short(e.g.Key) + " exists" }

// publish makes the filled folder tmp the golden disk meta.Key: its disk
// read-only, meta.json written, then the folder renamed into place.
func (s Store) publish(tmp string, meta Meta) (*Golden, error) {
	disk := filepath.Join(tmp, diskName)
	f, err := os.OpenFile(disk, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(disk, 0o444); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := instance.WriteFileAtomic(filepath.Join(tmp, metaName), append(b, '\n'), 0o444); err != nil {
		return nil, err
	}
	final := filepath.Join(s.Dir, meta.Key)
	if err := os.Rename(tmp, final); err != nil {
		if g, _ := s.Lookup(meta.Key); g != nil {
			return nil, &takenError{g: g}
		}
		return nil, err
	}
	syncDir(s.Dir)
	return s.Lookup(meta.Key)
}

// Recover finishes or undoes a capture of the instance that was cut short
// (a crash, a kill), as capture.json says; without one it does nothing.
// The instance's lock must be held. It returns whether cfg changed.
func (s Store) Recover(p instance.Paths, cfg *instance.Config) (bool, error) {
	b, err := smallfile.Read(p.Capture())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var in intent
	if json.Unmarshal(b, &in) != nil || !ValidKey(in.Key) || in.Meta.Key != in.Key ||
		filepath.Dir(in.Tmp) != filepath.Clean(s.Dir) || !strings.HasPrefix(filepath.Base(in.Tmp), tmpDir) {
		return false, fmt.Errorf("instance %s: %s is not a capture's record; remove it if the disk is in place", cfg.Name, p.Capture())
	}
	unlock, err := s.lock(syscall.LOCK_SH)
	if err != nil {
		return false, err
	}
	defer unlock()
	moved := filepath.Join(in.Tmp, diskName)
	switch {
	case exists(p.Disk()):
		// The disk never left: undo.
		os.RemoveAll(in.Tmp)
		return false, os.Remove(p.Capture())
	case exists(moved):
		_, err := s.finishMove(p, cfg, in)
		return err == nil, err
	}
	g, err := s.Lookup(in.Key)
	if err != nil || g == nil {
		return false, fmt.Errorf("instance %s: its disk is neither in its folder nor in the golden disks (%s): the capture lost it; `cowork delete --name %s` and init it again", cfg.Name, in.Key[:12], cfg.Name)
	}
	// Published, the overlay or the config not yet made.
	if _, err := s.finishOverlay(p, cfg, g); err != nil {
		return false, err
	}
	return true, os.Remove(p.Capture())
}

// finishOverlay gives the instance its overlay on g (anew: one an
// interrupted try left may be half written) and saves cfg.
func (s Store) finishOverlay(p instance.Paths, cfg *instance.Config, g *Golden) (*Golden, error) {
	overlay := p.DiskFor(instance.DiskQcow2)
	os.Remove(overlay)
	if err := qcow2.CreateOverlay(overlay, g.Disk(), max(int64(cfg.Disk), g.Size)); err != nil {
		return nil, err
	}
	cfg.DiskFormat, cfg.Golden = instance.DiskQcow2, g.Key
	return g, cfg.SaveDisk(p.Dir())
}

// Clone makes the disk of a new instance in p from g, of size bytes (at
// least g's): a reflink copy when the file system can, else an overlay.
// It returns the disk's format.
func (s Store) Clone(g *Golden, p instance.Paths, size int64) (string, error) {
	if size < g.Size {
		return "", fmt.Errorf("--disk %d bytes is smaller than the golden disk %s (%d bytes); give a larger --disk", size, short(g.Key), g.Size)
	}
	unlock, err := s.lock(syscall.LOCK_SH)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := lstatRegular(g.Disk()); err != nil {
		return "", fmt.Errorf("golden disk %s: %w", short(g.Key), err)
	}
	raw, tmp := p.Disk(), p.Disk()+".tmp"
	os.Remove(tmp)
	switch err := reflink(g.Disk(), tmp); {
	case err == nil:
		if err := os.Chmod(tmp, 0o600); err != nil {
			os.Remove(tmp)
			return "", err
		}
		if err := os.Truncate(tmp, size); err != nil {
			os.Remove(tmp)
			return "", err
		}
		return instance.DiskRaw, os.Rename(tmp, raw)
	case !errors.Is(err, errors.ErrUnsupported):
		os.Remove(tmp)
		return "", fmt.Errorf("clone the golden disk %s: %w", short(g.Key), err)
	}
	if err := qcow2.CreateOverlay(p.DiskFor(instance.DiskQcow2), g.Disk(), size); err != nil {
		return "", fmt.Errorf("make a disk on the golden disk %s: %w", short(g.Key), err)
	}
	return instance.DiskQcow2, nil
}

// readIntent reads the capture.json in the instance folder dir: ok when
// there is one, in nil when it cannot be read.
func readIntent(dir string) (in *intent, ok bool) {
	b, err := smallfile.Read(instance.Paths(dir).Capture())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	in = &intent{}
	if err != nil || json.Unmarshal(b, in) != nil {
		return nil, true
	}
	return in, true
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func syncDir(dir string) { _ = dirsync.Sync(dir) }
