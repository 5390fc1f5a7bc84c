// Package snapshot keeps disk snapshots of a stopped instance (issue 18,
// capability 3) by qcow2 layering: on ext4 there are no reflinks, and a
// copy of a disk of gigabytes takes far too long.
//
// A snapshot is a folder NAME/snapshots/SNAP holding the frozen layer,
// disk.raw or disk.qcow2 (read-only), and meta.json. Taking one renames
// the instance's disk into the folder (its inode and times stay) and gives
// the instance a new, empty qcow2 overlay on it; restoring one replaces
// the instance's overlay by a new one on the snapshot's layer. A layer
// that was itself an overlay keeps its backing file, so snapshots form a
// chain down to the instance's first disk (raw, or an overlay on a golden
// disk). hostd hands QEMU only chains that image/golden's CheckOverlay
// accepts: every layer a snapshot of the same instance, down to a golden
// disk or a standalone file.
//
// The folder is made to hold more later: a saved memory state beside the
// layer (a snapshot of a running instance).
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/internal/dirsync"
	"github.com/coworkhq/cowork/internal/smallfile"
)

const (
	metaName  = "meta.json"
	rmPrefix  = ".rm-" // a folder being removed: never a valid name
	layerBase = "disk."
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName says why name cannot name a snapshot: it must match
// [a-z0-9][a-z0-9._-]{0,62} and hold no "..", so that it is one path
// element of its own.
func ValidName(name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("snapshot name %q: use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, without \"..\"", name)
	}
	return nil
}

// Meta is meta.json, written last when a snapshot is taken.
type Meta struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Format is the layer's: raw (the instance's first disk) or qcow2.
	Format string `json:"format"`
	// Size is the disk's virtual size when the snapshot was taken.
	Size int64 `json:"size"`
	// Parent is the snapshot the layer is an overlay on, "" for none.
	Parent string `json:"parent,omitempty"`
	// Memory says the snapshot holds the guest's memory too: it was
	// taken of a suspended instance, and a restore resumes the guest
	// where it was (see Memory).
	Memory bool `json:"memory,omitempty"`
}

// Snapshot is one snapshot of an instance.
type Snapshot struct {
	Meta
	Dir string
	// Allocated is what its files take on the host's disk (st_blocks).
	Allocated int64
	// Current says the instance's disk is an overlay on this one.
	Current bool
}

// MemoryDir is the saved guest a snapshot with memory holds: the suspend
// folder's files (hostd/savestate), hard links to them.
func (s *Snapshot) MemoryDir() string { return filepath.Join(s.Dir, memoryName) }

// memoryName is the folder of a snapshot's saved memory.
const memoryName = "memory"

// Layer is the snapshot's frozen disk.
func (s *Snapshot) Layer() string { return LayerPath(s.Dir, s.Format) }

// LayerPath is the layer of format in the snapshot folder dir.
func LayerPath(dir, format string) string { return filepath.Join(dir, layerBase+format) }

// Dir is the folder of the snapshot name of the instance in p.
func Dir(p instance.Paths, name string) string { return filepath.Join(p.Snapshots(), name) }

// Load reads the snapshot name; an error saying how to list them when
// there is none.
func Load(p instance.Paths, name string) (*Snapshot, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	dir := Dir(p, name)
	if st, err := os.Lstat(dir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("snapshot %s: %s is not a folder", name, dir)
	}
	b, err := smallfile.Read(filepath.Join(dir, metaName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &NotFoundError{Name: name}
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	s := &Snapshot{Dir: dir}
	if err := json.Unmarshal(b, &s.Meta); err != nil || s.Name != name ||
		(s.Format != instance.DiskRaw && s.Format != instance.DiskQcow2) {
		return nil, fmt.Errorf("snapshot %s: its meta.json is not this snapshot's", name)
	}
	for _, f := range []string{s.Layer(), filepath.Join(dir, metaName)} {
		var st syscall.Stat_t
		if err := syscall.Lstat(f, &st); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", name, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return nil, fmt.Errorf("snapshot %s: %s is not a regular file", name, f)
		}
		s.Allocated += int64(st.Blocks) * 512
	}
	return s, nil
}

// NotFoundError is a snapshot that does not exist.
type NotFoundError struct{ Name string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no snapshot %s; see `cowork snapshot ls`", e.Name)
}

// List returns the instance's snapshots, oldest first, the one its disk
// sits on marked Current. It takes no lock: it only reads.
func List(p instance.Paths, cfg *instance.Config) ([]*Snapshot, error) {
	p = absolute(p)
	entries, err := os.ReadDir(p.Snapshots())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	current := On(p, cfg)
	var out []*Snapshot
	for _, e := range entries {
		if ValidName(e.Name()) != nil {
			continue
		}
		s, err := Load(p, e.Name())
		if err != nil {
			continue // a create cut short, or not ours: Recover's business
		}
		s.Current = s.Name == current
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// On names the snapshot whose layer the instance's disk is an overlay
// on, "" when none.
func On(p instance.Paths, cfg *instance.Config) string {
	p = absolute(p)
	if cfg.Format() != instance.DiskQcow2 {
		return ""
	}
	return layerOf(p, p.DiskFor(instance.DiskQcow2))
}

// layerOf names the snapshot of the instance in p whose layer the qcow2
// image at path backs onto, "" when none (or the header cannot be read).
func layerOf(p instance.Paths, path string) string {
	info, err := qcow2.ReadInfo(path)
	if err != nil || info.Backing == "" {
		return ""
	}
	name, _ := LayerName(p, info.Backing)
	return name
}

// LayerName says which snapshot of the instance in p the file at path is
// the layer of, by its path alone: p's snapshots folder, a valid name,
// disk.raw or disk.qcow2. It resolves no link: the caller checks the file.
func LayerName(p instance.Paths, path string) (name string, ok bool) {
	p = absolute(p)
	rel, err := filepath.Rel(p.Snapshots(), filepath.Clean(path))
	if err != nil {
		return "", false
	}
	name, base := filepath.Split(rel)
	name = strings.TrimSuffix(name, string(filepath.Separator))
	if ValidName(name) != nil || (base != layerBase+instance.DiskRaw && base != layerBase+instance.DiskQcow2) {
		return "", false
	}
	return name, true
}

// Layers lists the layer files in the instance folder dir's snapshots,
// including a snapshot being taken (no meta.json yet): whatever chains an
// instance may need (image/golden counts the golden disks they reach).
func Layers(dir string) []string {
	p := instance.Paths(dir)
	entries, _ := os.ReadDir(p.Snapshots())
	var out []string
	for _, e := range entries {
		if ValidName(e.Name()) != nil {
			continue // a removal's leftover: nothing sits on it
		}
		for _, f := range []string{instance.DiskRaw, instance.DiskQcow2} {
			l := LayerPath(filepath.Join(p.Snapshots(), e.Name()), f)
			if _, err := os.Lstat(l); err == nil {
				out = append(out, l)
			}
		}
	}
	return out
}

func syncDir(dir string) { _ = dirsync.Sync(dir) }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
