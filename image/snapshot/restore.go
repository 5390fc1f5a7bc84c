package snapshot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/units"
)

// DirtyError is a restore refused because the instance's overlay holds
// data that the restore would drop.
type DirtyError struct {
	Instance, Snapshot string
	On                 string // the snapshot the overlay is on
	Written            int64
}

func (e *DirtyError) Error() string {
	return fmt.Sprintf("%s's disk holds %s written since snapshot %s; restoring %s drops it: take a snapshot first (`cowork snapshot create NAME%s`) to keep it, or restore with --force",
		e.Instance, units.Size(e.Written), e.On, e.Snapshot, instance.NameFlag(e.Instance))
}

// Restore puts the stopped instance's disk back to the snapshot name: its
// overlay, which must be an overlay on one of its snapshots, is replaced
// by a new, empty one on name's layer (a rename: a crash leaves the old
// overlay or the new one). Without force an overlay that holds data is
// refused (*DirtyError, saying how much).
func Restore(p instance.Paths, cfg *instance.Config, name string, force bool) (*Snapshot, error) {
	p = absolute(p)
	if err := ValidName(name); err != nil {
		return nil, err
	}
	l, err := lock(p, cfg, "restore a snapshot")
	if err != nil {
		return nil, err
	}
	defer l.Release()
	s, err := Load(p, name)
	if err != nil {
		return nil, err
	}
	overlay := p.DiskFor(instance.DiskQcow2)
	on := On(p, cfg)
	if on == "" {
		// Its disk is no snapshot's overlay: dropping it could drop the
		// only copy of what it holds.
		return nil, fmt.Errorf("%s's disk %s is not an overlay on one of its snapshots; nothing can replace it safely", cfg.Name, cfg.DiskPath(p))
	}
	if !force {
		n, err := qcow2.Written(overlay)
		if err != nil {
			return nil, fmt.Errorf("%s's disk: %w; restore with --force to replace it anyway", cfg.Name, err)
		}
		if n > 0 {
			return nil, &DirtyError{Instance: cfg.Name, Snapshot: name, On: on, Written: n}
		}
	}
	next := overlay + ".restore"
	os.Remove(next)
	os.Remove(next + ".tmp")
	if err := qcow2.CreateOverlayOn(next, s.Layer(), s.Format, max(int64(cfg.Disk), s.Size)); err != nil {
		return nil, err
	}
	if err := os.Rename(next, overlay); err != nil {
		os.Remove(next)
		return nil, err
	}
	syncDir(p.Dir())
	s.Current = true
	return s, nil
}

// InUseError is a snapshot others sit on.
type InUseError struct {
	Name  string
	Users []string // "the disk of NAME", "snapshot X"
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("snapshot %s is the base of %s; it cannot go while they need it (restore another snapshot, or remove those first)", e.Name, strings.Join(e.Users, ", "))
}

// Remove deletes the snapshot name of the stopped instance unless its
// disk or another snapshot's layer is an overlay on it (*InUseError,
// naming them). The folder leaves by a rename first: a crash halfway
// through leaves a leftover that List skips and the next Remove deletes.
func Remove(p instance.Paths, cfg *instance.Config, name string) error {
	p = absolute(p)
	if err := ValidName(name); err != nil {
		return err
	}
	l, err := lock(p, cfg, "remove a snapshot")
	if err != nil {
		return err
	}
	defer l.Release()
	s, err := Load(p, name)
	if err != nil {
		return err
	}
	var users []string
	if cfg.Format() == instance.DiskQcow2 && sitsOn(p, p.DiskFor(instance.DiskQcow2), name) {
		users = append(users, "the disk of "+cfg.Name)
	}
	for _, layer := range Layers(p.Dir()) {
		other, _ := LayerName(p, layer)
		if other != name && sitsOn(p, layer, name) {
			users = append(users, "snapshot "+other)
		}
	}
	if len(users) > 0 {
		return &InUseError{Name: name, Users: users}
	}
	trash := filepath.Join(p.Snapshots(), rmPrefix+name)
	os.RemoveAll(trash)
	if err := os.Rename(s.Dir, trash); err != nil {
		return err
	}
	syncDir(p.Snapshots())
	removeLeftovers(p)
	return nil
}

// sitsOn says whether the image at path is an overlay on snapshot name's
// layer; one whose header cannot be read may be, so it counts too.
func sitsOn(p instance.Paths, path, name string) bool {
	if !strings.HasSuffix(path, ".qcow2") {
		return false // a raw layer names nothing
	}
	info, err := qcow2.ReadInfo(path)
	if err != nil {
		return true
	}
	on, _ := LayerName(p, info.Backing)
	return on == name
}

// removeLeftovers deletes the folders of removals cut short.
func removeLeftovers(p instance.Paths) {
	entries, _ := os.ReadDir(p.Snapshots())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), rmPrefix) {
			os.RemoveAll(filepath.Join(p.Snapshots(), e.Name()))
		}
	}
}

// absolute is p with an absolute folder: overlays name their backing file
// by an absolute path.
func absolute(p instance.Paths) instance.Paths {
	if abs, err := filepath.Abs(p.Dir()); err == nil {
		return instance.Paths(abs)
	}
	return p
}
