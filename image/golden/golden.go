// Package golden keeps provisioned disks in the cache, once per image and
// provisioning, so that the next instance of the same pair is a clone of
// one instead of minutes of provisioning (issue 18).
//
// A golden disk is a raw disk, read-only once published, in
// $COWORK_HOME/cache/golden/KEY/disk.raw with meta.json beside it. KEY
// hashes what decides the disk's content (Spec): the image's digest, the
// guest's architecture, the kernel for kernel-boot instances, the guest
// user, and the provisioning script. The agent is not in it: the guest's
// boot script installs the host's agent at every boot.
//
// A clone is a reflink (FICLONE on Linux, clonefile on macOS) where the
// file system has them: a separate raw file that shares blocks until
// written. Elsewhere (ext4) it is a thin qcow2 overlay whose backing file
// is the golden disk: that instance depends on it, and Remove refuses to
// delete a golden disk that an overlay uses.
package golden

import (
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/coworkhq/cowork/image/snapshot"
	"github.com/coworkhq/cowork/internal/smallfile"
)

// Schema is in every key: a change to how cowork makes or seals golden
// disks bumps it, so no clone inherits a disk an older cowork made.
const Schema = 1

// Spec is what decides a golden disk's content, and so its key.
type Spec struct {
	Schema       int    `json:"schema"`
	Arch         string `json:"arch"`
	ImageSHA256  string `json:"image_sha256"`
	KernelSHA256 string `json:"kernel_sha256,omitempty"`
	InitrdSHA256 string `json:"initrd_sha256,omitempty"`
	Cmdline      string `json:"cmdline,omitempty"`
	User         string `json:"user"`
	UID          int    `json:"uid"`
	// Provision is the sha256 of the guest's provisioning script, which
	// holds the packages, the commands and the proxy settings they ran with.
	Provision string `json:"provision_sha256"`
}

// Key is the hex sha256 of the spec's canonical JSON.
func (s Spec) Key() string {
	s.Schema = Schema
	b, _ := json.Marshal(s) // struct fields in a fixed order: canonical
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Meta is meta.json: the spec in clear, and what a listing shows.
type Meta struct {
	Key       string    `json:"key"`
	Spec      Spec      `json:"spec"`
	Image     string    `json:"image"`     // where the image came from, for the record
	Provision string    `json:"provision"` // a one-line summary of what was provisioned
	Size      int64     `json:"size"`      // the disk's virtual size
	Created   time.Time `json:"created"`
	From      string    `json:"from"`    // the instance it was captured from
	Version   string    `json:"version"` // the cowork that captured it
}

// Golden is one published golden disk.
type Golden struct {
	Meta
	Dir string
	// Allocated is what its disk takes on the host's disk, as looked up.
	Allocated int64
}

// Disk is the golden disk's file.
func (g *Golden) Disk() string { return filepath.Join(g.Dir, diskName) }

const (
	diskName = "disk.raw"
	metaName = "meta.json"
	lockName = ".lock"
	tmpDir   = ".tmp-"
)

var keyRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidKey says whether key can name a golden disk: 64 hex digits, so that
// no key is a path.
func ValidKey(key string) bool { return keyRE.MatchString(key) }

// Store is the golden disks of one $COWORK_HOME, and the instances there
// that may depend on them.
type Store struct {
	Dir  string // $COWORK_HOME/cache/golden
	Home string // $COWORK_HOME, whose instance folders are searched for dependants
}

// Lookup returns the golden disk with key; nil, nil when there is none.
func (s Store) Lookup(key string) (*Golden, error) {
	if !ValidKey(key) {
		return nil, fmt.Errorf("golden disk key %q: want 64 hex digits", key)
	}
	dir := filepath.Join(s.Dir, key)
	if st, err := os.Lstat(dir); err == nil && !st.IsDir() {
		// A symlink (or a file) in place of the folder: its disk would
		// be read, cloned or linked to from outside the store.
		return nil, fmt.Errorf("golden disk %s: %s is not a folder; remove it with `cowork image rm %s`", short(key), dir, short(key))
	}
	b, err := smallfile.Read(filepath.Join(dir, metaName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	g := &Golden{Dir: dir}
	if err := json.Unmarshal(b, &g.Meta); err != nil || g.Key != key {
		return nil, fmt.Errorf("golden disk %s: meta.json is not this disk's; remove it with `cowork image rm %s`", short(key), short(key))
	}
	st, err := lstatRegular(g.Disk())
	if err != nil {
		return nil, fmt.Errorf("golden disk %s: %w; remove it with `cowork image rm %s`", short(key), err, short(key))
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		g.Allocated = int64(sys.Blocks) * 512
	}
	return g, nil
}

// List returns the published golden disks, oldest first. A folder that is
// not one (an interrupted capture's, a foreign file) is left out.
func (s Store) List() ([]*Golden, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Golden
	for _, e := range entries {
		if !ValidKey(e.Name()) {
			continue
		}
		if g, err := s.Lookup(e.Name()); err == nil && g != nil {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Find returns the golden disk whose key starts with prefix (as `image ls`
// shows it); an error when none or several do.
func (s Store) Find(prefix string) (*Golden, error) {
	if len(prefix) < 4 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("golden disk %q: give at least 4 hex digits of a key from `cowork image ls`", prefix)
	}
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var hit *Golden
	for _, g := range all {
		if strings.HasPrefix(g.Key, prefix) {
			if hit != nil {
				return nil, fmt.Errorf("golden disk %q: more than one key starts so; give more digits", prefix)
			}
			hit = g
		}
	}
	if hit == nil {
		return nil, fmt.Errorf("no golden disk %q; see `cowork image ls`", prefix)
	}
	return hit, nil
}

// Dependants names the instances whose disk is an overlay on g, directly
// or through snapshot layers (sorted). It reads each instance's
// disk.qcow2 header and its snapshots' layers, not its config: the
// overlay exists before the config that records it is written, and a
// snapshot being taken holds the disk before its overlay is made. An
// instance whose capture of g was cut short depends on it too: until
// Recover makes its overlay, g is its only disk.
func (s Store) Dependants(g *Golden) ([]string, error) {
	entries, err := os.ReadDir(s.Home)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(s.Home, e.Name())
		if in, ok := readIntent(dir); ok && (in == nil || in.Key == g.Key) {
			// A record that cannot be read may name g.
			names = append(names, e.Name())
			continue
		}
		for _, img := range append([]string{filepath.Join(dir, "disk.qcow2")}, snapshot.Layers(dir)...) {
			if filepath.Ext(img) != ".qcow2" {
				continue // a raw layer names no file
			}
			if _, err := os.Lstat(img); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			// A layer that cannot be read may still need the disk.
			if reaches, unreadable := chainReaches(img, g.Disk()); reaches || unreadable {
				names = append(names, e.Name())
				break
			}
		}
	}
	return names, nil
}

// InUseError is a golden disk that instances still need.
type InUseError struct {
	Key   string
	Users []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("golden disk %s is the base of %s; delete %s first (`cowork delete --name NAME`)",
		short(e.Key), strings.Join(e.Users, ", "), plural(len(e.Users), "that instance", "those instances"))
}

// Remove deletes g unless an instance depends on it (*InUseError).
func (s Store) Remove(g *Golden) error {
	unlock, err := s.lock(syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	users, err := s.Dependants(g)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return &InUseError{Key: g.Key, Users: users}
	}
	// The folder leaves the store by a rename first: a crash halfway
	// through the removal leaves a leftover that List skips, never a
	// golden disk with half its files.
	trash := filepath.Join(s.Dir, tmpDir+"rm-"+g.Key)
	os.RemoveAll(trash)
	if err := os.Rename(g.Dir, trash); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}

// Prune removes every golden disk no instance depends on, and what
// interrupted captures left; it returns the removed ones.
func (s Store) Prune() ([]*Golden, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var removed []*Golden
	for _, g := range all {
		err := s.Remove(g)
		var inUse *InUseError
		switch {
		case errors.As(err, &inUse):
		case err != nil:
			return removed, err
		default:
			removed = append(removed, g)
		}
	}
	s.removeLeftovers()
	return removed, nil
}

// removeLeftovers deletes interrupted captures' and removals' folders,
// but not one that an instance's capture.json names: that capture moved
// the instance's disk there, and Recover finishes it at its next start.
func (s Store) removeLeftovers() {
	unlock, err := s.lock(syscall.LOCK_EX)
	if err != nil {
		return
	}
	defer unlock()
	pending := map[string]bool{}
	instances, _ := os.ReadDir(s.Home)
	for _, e := range instances {
		if !e.IsDir() {
			continue
		}
		in, ok := readIntent(filepath.Join(s.Home, e.Name()))
		if ok && in == nil {
			return // a record that cannot be read may name any of them
		}
		if ok {
			pending[filepath.Base(in.Tmp)] = true
		}
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpDir) && !pending[e.Name()] {
			os.RemoveAll(filepath.Join(s.Dir, e.Name()))
		}
	}
}

// lock takes the store's lock (LOCK_SH or LOCK_EX), waiting for it:
// clones and captures share it, removals take it alone, so a disk is
// never removed while it is being cloned.
func (s Store) lock(how int) (func(), error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, lockName), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the golden disks: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the golden disks: %w", err)
	}
	return func() { f.Close() }, nil
}

// lstatRegular stats path, which must be a regular file and no symlink.
func lstatRegular(path string) (fs.FileInfo, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return st, nil
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	if err1 != nil || err2 != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return os.SameFile(sa, sb)
}

// short is a key as listings show it.
func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

// Short is a key as listings show it: its first 12 digits.
func Short(key string) string { return short(key) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
