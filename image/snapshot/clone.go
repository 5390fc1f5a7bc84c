package snapshot

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/internal/reflink"
)

// CloneDisk makes the disk of a new instance (dp) from the snapshot name
// of the instance in sp: the snapshot and the ones under it become dp's
// own snapshots, and dp's disk a new overlay on the top one, of size
// bytes at least. A layer that names no other layer of sp (a raw one, or
// one on a golden disk) is a hard link to sp's: layers are read-only and
// never rewritten, so the two instances share its blocks and neither
// depends on the other. A layer on another layer is copied (reflink or
// sparse: it holds only what was written above the layer below) and
// rebased onto dp's copy below it, since an instance's chain may name no
// other instance's files (image/golden.CheckOverlay). The memory a
// snapshot holds becomes the clone's saved state (links to its files):
// the clone's first start resumes it, a fork.
// It returns the disk's format, qcow2. The caller holds sp's lock or sp
// runs (its hostd changes no snapshot), and removes dp on error.
func CloneDisk(sp, dp instance.Paths, name string, size int64) (string, error) {
	sp, dp = absolute(sp), absolute(dp)
	if err := ValidName(name); err != nil {
		return "", err
	}
	if err := Supported(); err != nil {
		return "", err
	}
	var chain []*Snapshot // top first
	for n := name; n != ""; {
		if len(chain) > 64 {
			return "", fmt.Errorf("snapshot %s sits on more than 64 others", name)
		}
		s, err := Load(sp, n)
		if err != nil {
			return "", err
		}
		chain = append(chain, s)
		n = s.Parent
	}
	// The top layer's stamp before it is cloned: a saved guest is given
	// to the clone only if it was saved with that very file, and the
	// file is still it once linked (no snapshot rm and create raced
	// this clone, which takes no lock of sp's).
	topStamp, err := savestate.Stamp(chain[0].Layer())
	if err != nil {
		return "", err
	}
	below := "" // dp's copy of the layer under the current one
	for i := len(chain) - 1; i >= 0; i-- {
		s := chain[i]
		dir := Dir(dp, s.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		dst := LayerPath(dir, s.Format)
		if err := cloneLayer(sp, s, dst, below); err != nil {
			return "", fmt.Errorf("snapshot %s: %w", s.Name, err)
		}
		m := s.Meta
		m.Memory = false
		b, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return "", err
		}
		if err := instance.WriteFileAtomic(filepath.Join(dir, metaName), append(b, '\n'), 0o444); err != nil {
			return "", err
		}
		below = dst
	}
	top := chain[0]
	if err := qcow2.CreateOverlayOn(dp.DiskFor(instance.DiskQcow2), below, top.Format, max(size, top.Size)); err != nil {
		return "", err
	}
	if top.Memory && sameGuest(sp, top, topStamp) {
		// The saved guest becomes the clone's saved state, which its first
		// start resumes (a fork) on the layer it was saved with: the same
		// file, or a copy that differs only in naming the clone's copy of
		// the layer below. Its manifest, the clone's own, names the
		// clone's layer and its stamp.
		if err := linkState(top.MemoryDir(), dp.Suspend()); err != nil {
			return "", fmt.Errorf("snapshot %s's memory: %w", name, err)
		}
		if err := restamp(dp.Suspend(), below); err != nil {
			os.RemoveAll(dp.Suspend())
			return "", fmt.Errorf("snapshot %s's memory: %w", name, err)
		}
	}
	return instance.DiskQcow2, nil
}

// sameGuest says whether top's saved guest was saved with its layer as
// stamped (stamp), and both are still top's: its meta unchanged, its
// layer the same file. Else the clone boots cold: a guest resumed on
// another disk than its own would corrupt it.
func sameGuest(sp instance.Paths, top *Snapshot, stamp savestate.DiskStamp) bool {
	m, err := savestate.Load(top.MemoryDir())
	if err != nil || m.Disk != stamp {
		return false
	}
	now, err := savestate.Stamp(top.Layer())
	if err != nil || now != stamp {
		return false
	}
	again, err := Load(sp, top.Name)
	return err == nil && again.Created.Equal(top.Created)
}

// restamp records layer as the disk of the saved guest in dir, in a new
// manifest (the old one is a link to the source's, which stays as it
// was).
func restamp(dir, layer string) error {
	m, err := savestate.Load(dir)
	if err != nil {
		return err
	}
	if m.Disk, err = savestate.Stamp(layer); err != nil {
		return err
	}
	m.VM.Disk = layer
	return savestate.Write(dir, m)
}

// cloneLayer makes dst, the clone's copy of s's layer, on below (the
// clone's copy of the layer s sits on, "" for none).
func cloneLayer(sp instance.Paths, s *Snapshot, dst, below string) error {
	src := s.Layer()
	onLayer := false
	if s.Format == instance.DiskQcow2 {
		info, err := qcow2.ReadInfo(src)
		if err != nil {
			return err
		}
		var on string
		on, onLayer = LayerName(sp, info.Backing)
		if onLayer && (below == "" || on != s.Parent) {
			return fmt.Errorf("its layer sits on %s, which is not the snapshot it records (%q); was it removed and taken again meanwhile? clone again", info.Backing, s.Parent)
		}
		if onLayer {
			tmp := dst + ".tmp"
			os.Remove(tmp)
			if _, err := reflink.Copy(src, tmp); err != nil {
				return err
			}
			if err := qcow2.Rebase(tmp, below, info.BackingFormat); err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Chmod(tmp, 0o444); err != nil {
				return err
			}
			return os.Rename(tmp, dst)
		}
	}
	if err := os.Link(src, dst); err != nil {
		// Another file system (a COWORK_HOME spread over mounts): a copy.
		if _, cerr := reflink.Copy(src, dst); cerr != nil {
			return fmt.Errorf("link or copy %s: %w", src, cerr)
		}
		return os.Chmod(dst, 0o444)
	}
	return nil
}
