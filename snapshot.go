package cowork

import (
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/snapshot"
)

// A snapshot is a read-only freeze of a stopped instance's disk, in the
// instance's folder (image/snapshot): taking one is a rename and a new
// thin qcow2 overlay, whatever the disk's size; restoring one replaces the
// overlay. A snapshot of a suspended instance keeps its memory too, and
// restoring it makes the next start resume the guest as it was. These run
// in the calling process: they need no daemon, only the instance's lock (a
// running instance is refused: Suspend it first).

// Snapshot is one disk snapshot of an instance.
type Snapshot struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Format is the frozen layer's: raw (the instance's first disk) or
	// qcow2 (an overlay on an earlier snapshot or a golden disk).
	Format string `json:"format"`
	// Size is the disk's virtual size then; Allocated what the snapshot
	// takes on the host's disk.
	Size      int64 `json:"size"`
	Allocated int64 `json:"allocated"`
	// Parent is the snapshot it was taken on top of, "" for none.
	Parent string `json:"parent,omitempty"`
	// Memory says it holds the suspended guest too: a restore resumes it.
	Memory bool `json:"memory"`
	// Current says the instance's disk sits on it (the last one taken or
	// restored).
	Current bool `json:"current"`
}

// SnapshotDirtyError is a restore refused because the instance's disk
// holds changes since its snapshot; RestoreSnapshot with force drops them.
type SnapshotDirtyError = snapshot.DirtyError

// SnapshotInUseError is a snapshot that the disk or other snapshots sit on.
type SnapshotInUseError = snapshot.InUseError

func snapshotOf(s *snapshot.Snapshot) Snapshot {
	return Snapshot{Name: s.Name, Created: s.Created, Format: s.Format, Size: s.Size, Allocated: s.Allocated, Parent: s.Parent, Memory: s.Memory, Current: s.Current}
}

// Snapshot takes the snapshot name of the stopped instance's disk; the
// instance goes on from a new overlay on it.
func (i *Instance) Snapshot(name string) (Snapshot, error) {
	if err := i.LocalOnly(OpSnapshot); err != nil {
		return Snapshot{}, err
	}
	s, err := snapshot.Create(i.Paths, i.Config, name)
	if err != nil {
		return Snapshot{}, err
	}
	out := snapshotOf(s)
	out.Current = true
	return out, nil
}

// Snapshots lists the instance's snapshots, oldest first.
func (i *Instance) Snapshots() ([]Snapshot, error) {
	all, err := snapshot.List(i.Paths, i.Config)
	out := make([]Snapshot, 0, len(all))
	for _, s := range all {
		out = append(out, snapshotOf(s))
	}
	return out, err
}

// RestoreSnapshot puts the stopped instance's disk back to the snapshot
// name. A disk that holds changes since the snapshot it sits on is
// refused (*SnapshotDirtyError) unless force: they would be lost.
func (i *Instance) RestoreSnapshot(name string, force bool) (Snapshot, error) {
	if err := i.LocalOnly(OpSnapshot); err != nil {
		return Snapshot{}, err
	}
	s, err := snapshot.Restore(i.Paths, i.Config, name, force)
	if err != nil {
		return Snapshot{}, err
	}
	return snapshotOf(s), nil
}

// RemoveSnapshot deletes the snapshot name of the stopped instance, and
// returns what it freed; one that the disk or another snapshot sits on is
// refused (*SnapshotInUseError, naming them).
func (i *Instance) RemoveSnapshot(name string) (Snapshot, error) {
	s, err := snapshot.Load(i.Paths, name)
	if err != nil {
		return Snapshot{}, err
	}
	return snapshotOf(s), snapshot.Remove(i.Paths, i.Config, name)
}

// CloneSnapshot makes the instance dst from this instance's snapshot
// name, as Clone does from its disk: the snapshot (and those under it)
// become dst's, its disk a new overlay on it; layers are hard links, or
// copies of what a layer holds above the one below. The instance may be
// running. A snapshot with memory on a linked layer gives dst its saved
// guest: dst's first start resumes it (a fork, which then reseeds its
// random numbers and takes a new machine-id), else dst boots cold.
func (i *Instance) CloneSnapshot(name, dst, workspace string) (*Instance, error) {
	return i.cloneSnapshot(name, dst, instance.CloneOptions{Workspace: workspace})
}

func (i *Instance) cloneSnapshot(name, dst string, o instance.CloneOptions) (*Instance, error) {
	if err := i.LocalOnly(OpClone); err != nil {
		return nil, err
	}
	if err := snapshot.ValidName(name); err != nil {
		return nil, err
	}
	if _, err := snapshot.Load(i.Paths, name); err != nil {
		return nil, err
	}
	size := int64(i.Config.Disk)
	o.FromSnapshot = func(sp, dp instance.Paths) (string, error) { return snapshot.CloneDisk(sp, dp, name, size) }
	cfg, err := instance.Clone(i.Config, dst, o)
	if err != nil {
		return nil, err
	}
	c, err := Open(dst)
	if err != nil {
		return nil, err
	}
	// A snapshot with memory gave the clone its saved guest, whose NIC
	// has the source's MAC: the clone keeps it, or the resume is refused
	// (it then boots cold, as it would have).
	if m, err := savestate.Load(c.Paths.Suspend()); err == nil && m.VM.MAC != "" {
		cfg.MAC = m.VM.MAC
		if err := cfg.Save(c.Paths.Dir()); err != nil {
			return nil, err
		}
		c.Config = cfg
	}
	return c, nil
}
