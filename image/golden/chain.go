package golden

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/image/snapshot"
)

// MaxChain bounds the layers under an instance's disk: the snapshots it
// sits on, one above the other.
const MaxChain = 64

// CheckOverlay says whether the qcow2 disk at path (an instance's
// NAME/disk.qcow2) may be handed to QEMU. QEMU opens whatever file a
// header names as backing file, and that file's backing file in turn, so
// a disk.qcow2 put together by anyone else (naming ~/.ssh/id_ed25519, say)
// would give the guest that file. Each backing file in the chain must be
//
//   - a snapshot layer of the same instance, NAME/snapshots/SNAP/disk.raw
//     or disk.qcow2, reached by no symbolic link, a regular file, in the
//     format its name says and the header records (a qcow2 layer's own
//     backing file is checked in turn, at most MaxChain layers deep, no
//     layer twice); or
//   - a golden disk of this store, raw, which ends the chain.
//
// No layer may keep its data in another file, and every name must be an
// absolute path. A raw layer ends the chain: QEMU reads it as raw (the
// format is recorded), whatever its content, so a guest that wrote a
// qcow2 header into its raw disk cannot make QEMU follow it.
func (s Store) CheckOverlay(path string) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	inst := instance.Paths(dir)
	var seen []os.FileInfo
	cur := path
	for depth := 0; ; depth++ {
		if depth > MaxChain {
			return fmt.Errorf("disk %s sits on more than %d layers; cowork makes no such disk, refusing to start", path, MaxChain)
		}
		st, err := os.Stat(cur)
		if err != nil {
			return fmt.Errorf("disk %s: %w", path, err)
		}
		for _, o := range seen {
			if os.SameFile(o, st) {
				return fmt.Errorf("disk %s: its layers loop back to %s; refusing to start", path, cur)
			}
		}
		seen = append(seen, st)
		info, err := qcow2.ReadInfo(cur)
		if err != nil {
			return fmt.Errorf("disk %s: %w", path, err)
		}
		if info.DataFile != "" || info.ExternalData {
			// QEMU would read and write the guest's clusters in that file.
			return fmt.Errorf("disk %s keeps its data in another file (%q); cowork makes no such disk, refusing to start", cur, info.DataFile)
		}
		if info.Backing == "" {
			return nil // a standalone qcow2 reads no other file
		}
		if !filepath.IsAbs(info.Backing) {
			// QEMU resolves it from the overlay's folder, EvalSymlinks below
			// from the working directory: they may not be the same file.
			return fmt.Errorf("disk %s names %q as its backing file, a relative path; cowork makes no such disk, refusing to start", cur, info.Backing)
		}
		if _, ok := snapshot.LayerName(inst, info.Backing); !ok {
			return s.checkGolden(cur, info)
		}
		if err := checkLayer(inst, cur, info); err != nil {
			return err
		}
		if info.BackingFormat == instance.DiskRaw {
			return nil
		}
		cur = info.Backing
	}
}

// checkLayer checks the snapshot layer that the image at path names: no
// link on the way to it, a regular file, its recorded format its name's.
func checkLayer(inst instance.Paths, path string, info *qcow2.Info) error {
	name, _ := snapshot.LayerName(inst, info.Backing)
	realInst, err := filepath.EvalSymlinks(inst.Dir())
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(info.Backing)
	if err != nil {
		return fmt.Errorf("disk %s is on snapshot %s, which is gone (%v); restore another snapshot or delete the instance", path, name, err)
	}
	base := filepath.Base(info.Backing)
	if real != filepath.Join(realInst, "snapshots", name, base) {
		return fmt.Errorf("disk %s names %s as its backing file, which leads out of the instance's snapshots (to %s); refusing to start", path, info.Backing, real)
	}
	if _, err := lstatRegular(real); err != nil {
		return fmt.Errorf("disk %s: snapshot %s: %w", path, name, err)
	}
	if want := "disk." + info.BackingFormat; base != want {
		return fmt.Errorf("disk %s records format %q for its backing file %s; cowork makes no such disk, refusing to start", path, info.BackingFormat, info.Backing)
	}
	return nil
}

// checkGolden checks that the image at path is on a golden disk of this
// store, raw.
func (s Store) checkGolden(path string, info *qcow2.Info) error {
	if info.BackingFormat != "raw" {
		return fmt.Errorf("disk %s: its backing file's format is %q, not raw; cowork makes no such disk", path, info.BackingFormat)
	}
	dir, err := filepath.EvalSymlinks(s.Dir)
	if err != nil {
		return fmt.Errorf("disk %s names %s as its backing file, which is not a golden disk (there are none in %s) nor a snapshot of this instance; refusing to start", path, info.Backing, s.Dir)
	}
	real, err := filepath.EvalSymlinks(info.Backing)
	if err != nil {
		return fmt.Errorf("disk %s is on the golden disk %s, which is gone (%v); the instance cannot start: delete it and init it again", path, info.Backing, err)
	}
	key := filepath.Base(filepath.Dir(real))
	if filepath.Dir(filepath.Dir(real)) != dir || !ValidKey(key) || filepath.Base(real) != diskName {
		return fmt.Errorf("disk %s names %s as its backing file, which is not a golden disk in %s nor a snapshot of this instance; refusing to start", path, info.Backing, s.Dir)
	}
	if _, err := lstatRegular(real); err != nil {
		return fmt.Errorf("disk %s: golden disk: %w", path, err)
	}
	return nil
}

// chainReaches says whether the qcow2 image at path, or a layer under it,
// is an overlay on the file target; unreadable says a layer could not be
// read (it may be). It follows at most MaxChain layers.
func chainReaches(path, target string) (reaches, unreadable bool) {
	cur := path
	for depth := 0; depth <= MaxChain; depth++ {
		info, err := qcow2.ReadInfo(cur)
		if err != nil {
			return false, true
		}
		if info.Backing == "" {
			return false, false
		}
		if sameFile(info.Backing, target) {
			return true, false
		}
		if info.BackingFormat != instance.DiskQcow2 {
			return false, false
		}
		cur = info.Backing
	}
	return false, true
}
