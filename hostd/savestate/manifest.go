// Package savestate is the record of a suspended VM (issue 18): what its
// saved memory and device state were saved from, so that a resume into
// anything else is refused and the instance cold-boots instead, with
// nothing lost.
//
// A saved state is a folder: the backend's files (QEMU: device.state and
// ram; vz: its state file) and manifest.json, written last. A folder
// without a manifest is a suspend cut short: it is discarded. A state is
// only valid against the same hypervisor binary, the same VM
// configuration, the same host boot (the issue asks for a cold boot after
// a host reboot) and the same disk, untouched since the save: the guest's
// memory holds the disk's page cache, and a disk that moved on under it
// would be corrupted (plan18 E12).
package savestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/internal/dirsync"
)

// Version is the manifest format's; another is refused.
const Version = 1

// ManifestName is the manifest's file in a saved state's folder.
const ManifestName = "manifest.json"

// Manifest describes one saved state.
type Manifest struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	// Backend is "qemu" or "vz".
	Backend string `json:"backend"`
	// Cowork is the version of the cowork that saved it: the saved guest
	// runs that build's agent, and hostd's device layout is that build's.
	Cowork string `json:"cowork"`
	// Instance is the instance that saved it ("NAME/INSTANCE-ID").
	// Another one resuming it (a clone of a snapshot with memory) is a
	// fork of that guest, which then makes itself its own (hostd's
	// personalize).
	Instance   string     `json:"instance,omitempty"`
	Hypervisor Binary     `json:"hypervisor"`
	VM         VM         `json:"vm"`
	HostBootID string     `json:"host_boot_id"`
	Disk       DiskStamp  `json:"disk"`
	Files      []FileSize `json:"files"`
}

// Binary is the hypervisor that saved the state: QEMU's binary, or the
// macOS build for vz.
type Binary struct {
	Path    string `json:"path"`
	SHA256  string `json:"sha256"`
	Version string `json:"version"`
}

// VM is what of the VM's configuration the state depends on: the devices
// and memory the saved guest knows.
type VM struct {
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	Memory     int64  `json:"memory"`
	Disk       string `json:"disk"`
	DiskFormat string `json:"disk_format"`
	MAC        string `json:"mac"`
	// FirmwareSHA256 is the digest of the EFI code the guest runs; empty
	// for a guest that boots its kernel directly.
	FirmwareSHA256 string `json:"firmware_sha256,omitempty"`
	// Devices is the backend's device layout in a form that changes when
	// the layout does (QEMU: its arguments with run-specific paths and
	// descriptors masked).
	Devices string `json:"devices"`
}

// DiskStamp identifies the disk file as it was once flushed for the save.
type DiskStamp struct {
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
}

// FileSize is one of the state's files and its size when saved.
type FileSize struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Stamp reads the disk file's identity.
func Stamp(disk string) (DiskStamp, error) {
	st, err := os.Stat(disk)
	if err != nil {
		return DiskStamp{}, err
	}
	s := DiskStamp{Size: st.Size(), MtimeNs: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Ino = uint64(sys.Ino)
	}
	return s, nil
}

// Refused is a saved state that does not match what would resume it:
// What changed, from Saved to Now.
type Refused struct {
	What       string
	Saved, Now string
}

func (e *Refused) Error() string {
	if e.Saved == "" && e.Now == "" {
		return "saved state refused: " + e.What + "; the instance cold-boots instead"
	}
	return fmt.Sprintf("saved state refused: %s changed (%s → %s); the instance cold-boots instead", e.What, e.Saved, e.Now)
}

// Check says whether the saved state m may be resumed where now describes
// the host, the hypervisor and the VM as they are (Saved, Files and Disk
// of now are ignored, except Disk, which must be the disk's stamp now).
// The first mismatch is a *Refused naming it.
func (m *Manifest) Check(now Manifest) error {
	type field struct {
		what, saved, now string
	}
	fields := []field{
		{"the saved state's format", fmt.Sprint(m.Version), fmt.Sprint(Version)},
		{"the backend", m.Backend, now.Backend},
		{"cowork", m.Cowork, now.Cowork},
		{"the host (it restarted since)", short(m.HostBootID), short(now.HostBootID)},
		{"the hypervisor's binary", m.Hypervisor.Path, now.Hypervisor.Path},
		{"the hypervisor's version", m.Hypervisor.Version, now.Hypervisor.Version},
		{"the hypervisor's build", short(m.Hypervisor.SHA256), short(now.Hypervisor.SHA256)},
		{"the architecture", m.VM.Arch, now.VM.Arch},
		{"the CPU count", fmt.Sprint(m.VM.CPUs), fmt.Sprint(now.VM.CPUs)},
		{"the memory", fmt.Sprint(m.VM.Memory), fmt.Sprint(now.VM.Memory)},
		{"the disk", m.VM.Disk, now.VM.Disk},
		{"the disk's format", m.VM.DiskFormat, now.VM.DiskFormat},
		{"the MAC address", m.VM.MAC, now.VM.MAC},
		{"the firmware", short(m.VM.FirmwareSHA256), short(now.VM.FirmwareSHA256)},
		{"the device layout", short(m.VM.Devices), short(now.VM.Devices)},
	}
	for _, f := range fields {
		if f.saved != f.now {
			return &Refused{What: f.what, Saved: f.saved, Now: f.now}
		}
	}
	if m.VM.Devices != now.VM.Devices { // equal prefixes, different layouts
		return &Refused{What: "the device layout"}
	}
	if m.Disk != now.Disk {
		return &Refused{What: "the disk was written since the save"}
	}
	return nil
}

// CheckFiles says whether the state's files in dir are whole: each there,
// a regular file (no symlink), of the size saved.
func (m *Manifest) CheckFiles(dir string) error {
	if len(m.Files) == 0 {
		return &Refused{What: "it names no files"}
	}
	for _, f := range m.Files {
		if f.Name == "" || f.Name != filepath.Base(f.Name) || f.Name == ManifestName || strings.HasPrefix(f.Name, ".") {
			return &Refused{What: fmt.Sprintf("it names a file %q outside its folder", f.Name)}
		}
		st, err := os.Lstat(filepath.Join(dir, f.Name))
		switch {
		case err != nil:
			return &Refused{What: fmt.Sprintf("its file %s is missing", f.Name)}
		case !st.Mode().IsRegular():
			return &Refused{What: fmt.Sprintf("its file %s is not a regular file", f.Name)}
		case st.Size() != f.Size:
			return &Refused{What: fmt.Sprintf("its file %s is %d bytes, saved %d", f.Name, st.Size(), f.Size)}
		}
	}
	return nil
}

// Sizes lists dir's files (other than the manifest) with their sizes,
// for a manifest.
func Sizes(dir string, names ...string) ([]FileSize, error) {
	var out []FileSize
	for _, n := range names {
		st, err := os.Lstat(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		out = append(out, FileSize{Name: n, Size: st.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Usage is what the files of the saved state in dir take on the host's
// disk: their allocated blocks (a sparse RAM file counts its data only).
func Usage(dir string) int64 {
	var total int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Lstat(filepath.Join(dir, e.Name()), &st) == nil {
			total += st.Blocks * 512
		}
	}
	return total
}

// maxManifest bounds a manifest read back: it is a few hundred bytes.
const maxManifest = 64 << 10

// Write writes m into dir as its manifest, through a temporary file and a
// rename, and syncs the folder: the manifest is the save's commit point.
func Write(dir string, m *Manifest) error {
	m.Version = Version
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+ManifestName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, ManifestName))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return dirsync.Sync(dir)
}

// ErrNone is Load's error for a folder with no manifest: no saved state,
// or a save cut short.
var ErrNone = errors.New("no saved state")

// Load reads dir's manifest. It is hostd's own file in the instance's
// owner-only folder, read with care all the same: no symlink, no fifo, a
// bounded size, a known version.
func Load(dir string) (*Manifest, error) {
	f, err := os.OpenFile(filepath.Join(dir, ManifestName), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, &Refused{What: fmt.Sprintf("its manifest cannot be read (%v)", err)}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxManifest {
		return nil, &Refused{What: "its manifest is not a small regular file"}
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, &Refused{What: fmt.Sprintf("its manifest cannot be read (%v)", err)}
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &Refused{What: "its manifest is not valid JSON"}
	}
	if m.Version != Version {
		return nil, &Refused{What: "the saved state's format", Saved: fmt.Sprint(m.Version), Now: fmt.Sprint(Version)}
	}
	return &m, nil
}

// short cuts a digest or boot id to what a message needs.
func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
