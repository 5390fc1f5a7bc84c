package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxMounts bounds an instance's mounts besides the workspace: each is a
// device and a file server process on the host.
const MaxMounts = 8

// GuestWorkspace is where the guest mounts the workspace.
const GuestWorkspace = "/workspace"

// Mount is a host folder shared into the guest besides the workspace,
// with the workspace's ownership rules: what the guest makes there
// belongs on the host to the folder's owner.
type Mount struct {
	Host  string `json:"host"`
	Guest string `json:"guest"`
	// ReadOnly: the host serves the folder read-only; root in the guest
	// cannot make it writable.
	ReadOnly bool `json:"read_only,omitempty"`
}

// Mode is "ro" or "rw".
func (m Mount) Mode() string {
	if m.ReadOnly {
		return "ro"
	}
	return "rw"
}

// String is the mount as --mount takes it.
func (m Mount) String() string { return m.Host + ":" + m.Guest + ":" + m.Mode() }

// MountTag is the virtiofs tag of the config's i-th mount (the
// workspace's is ShareTag).
func MountTag(i int) string { return "mount" + strconv.Itoa(i+1) }

// ParseMount reads HOST[:GUEST][:ro|:rw]. HOST may start with ~ and is
// made absolute; GUEST defaults to HOST's absolute path, as Lima mounts
// it. Whether HOST exists is CheckMountHosts's to say.
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	var m Mount
	if n := len(parts); n > 1 && (parts[n-1] == "ro" || parts[n-1] == "rw") {
		m.ReadOnly = parts[n-1] == "ro"
		parts = parts[:n-1]
	}
	if len(parts) > 2 || parts[0] == "" {
		return Mount{}, fmt.Errorf("--mount %q: want HOST[:GUEST][:ro], e.g. ~/data:/data:ro (a path with a colon cannot be mounted)", s)
	}
	host, err := filepath.Abs(ExpandHome(parts[0]))
	if err != nil {
		return Mount{}, fmt.Errorf("--mount %q: %w", s, err)
	}
	m.Host, m.Guest = host, host
	if len(parts) == 2 {
		m.Guest = parts[1]
	}
	return m, nil
}

// systemDirs are guest folders a mount may neither cover nor sit in:
// the system's own, which a share over them would replace.
var systemDirs = []string{"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
	"/proc", "/run", "/sbin", "/snap", "/sys", "/usr", "/var"}

// topDirs are guest folders a mount may sit in but not replace.
var topDirs = []string{"/home", "/home/cowork", "/root", "/tmp", "/mnt", "/opt", "/srv", "/media"}

// checkGuestPath refuses a guest path a mount cannot have.
func checkGuestPath(flag, guest string) error {
	switch {
	case guest == "" || !filepath.IsAbs(guest):
		return fmt.Errorf("%s: guest path %q is not absolute; give one like /data", flag, guest)
	case filepath.Clean(guest) != guest:
		return fmt.Errorf("%s: guest path %q is not clean; write it as %s", flag, guest, filepath.Clean(guest))
	case len(guest) > 1024 || strings.ContainsFunc(guest, func(r rune) bool { return r < ' ' || r == 0x7f || r == ',' || r == ' ' }):
		return fmt.Errorf("%s: guest path %q holds a space, a comma or a control character; choose a plain path like /data", flag, guest)
	case guest == "/":
		return fmt.Errorf("%s: a mount cannot replace the guest's root folder; choose a folder like /data", flag)
	}
	for _, d := range systemDirs {
		if within(guest, d) {
			return fmt.Errorf("%s: guest path %s is in the system folder %s, which a mount would hide; choose another, like /data or /mnt/NAME", flag, guest, d)
		}
	}
	for _, d := range topDirs {
		if guest == d {
			return fmt.Errorf("%s: guest path %s would hide the guest's %s; mount in a folder under it, like %s/NAME", flag, guest, d, d)
		}
	}
	return nil
}

// within reports whether path is dir or inside it (both clean).
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// ValidateMounts checks the mounts against each other and the workspace:
// every problem a user can act on, without touching the host (Validate
// checks them too).
func (c *Config) ValidateMounts() error { return errors.Join(c.validateMounts()...) }

func (c *Config) validateMounts() []error {
	var errs []error
	if len(c.Mounts) > MaxMounts {
		errs = append(errs, fmt.Errorf("--mount: %d mounts, more than an instance has (%d)", len(c.Mounts), MaxMounts))
	}
	for i, m := range c.Mounts {
		flag := fmt.Sprintf("--mount %s", m.Host)
		if !filepath.IsAbs(m.Host) || filepath.Clean(m.Host) != m.Host {
			errs = append(errs, fmt.Errorf("%s: want an absolute, clean host path", flag))
			continue
		}
		if err := checkGuestPath(flag, m.Guest); err != nil {
			errs = append(errs, err)
			continue
		}
		if within(m.Guest, GuestWorkspace) || within(GuestWorkspace, m.Guest) {
			errs = append(errs, fmt.Errorf("%s: guest path %s overlaps the workspace at %s; choose another", flag, m.Guest, GuestWorkspace))
		}
		if c.Workspace != "" && (within(m.Host, c.Workspace) || within(c.Workspace, m.Host)) {
			errs = append(errs, fmt.Errorf("%s: the folder overlaps the workspace %s, which is shared already; mount a folder outside it", flag, c.Workspace))
		}
		for _, o := range c.Mounts[:i] {
			switch {
			case within(m.Guest, o.Guest) || within(o.Guest, m.Guest):
				errs = append(errs, fmt.Errorf("%s: guest path %s overlaps %s's %s; one mount per folder", flag, m.Guest, o.Host, o.Guest))
			case within(m.Host, o.Host) || within(o.Host, m.Host):
				errs = append(errs, fmt.Errorf("%s: the folder overlaps the mount of %s (a folder is shared once, or a read-only one could be written through the other)", flag, o.Host))
			}
		}
	}
	return errs
}

// hostSystemDirs are host folders no mount may be in: device nodes the
// file server would open for the guest, the kernel's own trees.
var hostSystemDirs = []string{"/dev", "/proc", "/sys"}

// CheckMountHosts checks what validation cannot without the host: each
// mount's folder exists, is a folder, is not in /dev, /proc or /sys,
// overlaps neither the workspace nor another mount, and neither holds nor
// sits in cowork's own folder home ($COWORK_HOME), whose instances'
// disks, configs and audit logs the guest must not reach. Folders are
// compared as the host finds them (device and inode, up each one's
// parents), so neither a link, a bind mount nor a name spelled in
// another case on a case-insensitive disk gets past.
func (c *Config) CheckMountHosts(home string) error {
	var errs []error
	type folder struct {
		path string // resolved
		info os.FileInfo
	}
	look := func(p string) *folder {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil
		}
		st, err := os.Stat(r)
		if err != nil {
			return nil
		}
		return &folder{r, st}
	}
	overlap := func(a, b *folder) bool {
		return a != nil && b != nil && (holds(a.info, b.path) || holds(b.info, a.path))
	}
	homeF, wsF := look(home), look(c.Workspace)
	var seen []*folder
	for _, m := range c.Mounts {
		flag := "--mount " + m.Host
		st, err := os.Stat(m.Host)
		switch {
		case errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("%s: no such folder; create it first (mkdir -p %s)", flag, m.Host))
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", flag, err))
			continue
		case !st.IsDir():
			errs = append(errs, fmt.Errorf("%s: not a folder; a mount shares a folder (copy a file in with `cowork cp`)", flag))
			continue
		}
		f := look(m.Host)
		if f == nil {
			errs = append(errs, fmt.Errorf("%s: cannot resolve the folder", flag))
			continue
		}
		for _, d := range hostSystemDirs {
			if within(f.path, d) {
				errs = append(errs, fmt.Errorf("%s: the folder is in %s, which is the host's own; share a folder of yours", flag, d))
			}
		}
		switch {
		case home != "" && overlap(f, homeF):
			errs = append(errs, fmt.Errorf("%s: the folder holds or is in cowork's own folder %s (instances' disks and audit logs); mount a folder beside it", flag, home))
		case overlap(f, wsF):
			errs = append(errs, fmt.Errorf("%s: the folder (%s) overlaps the workspace %s, which is shared already; mount a folder outside it", flag, f.path, c.Workspace))
		}
		for _, o := range seen {
			if overlap(f, o) {
				errs = append(errs, fmt.Errorf("%s: the folder (%s) overlaps another mount's (%s); a folder is shared once", flag, f.path, o.path))
			}
		}
		seen = append(seen, f)
	}
	return errors.Join(errs...)
}

// CheckWorkspace refuses a workspace that would show the guest cowork's
// own files: one that holds cowork's folder home ($COWORK_HOME) shows
// every instance's disk, audit log and keys (the secrets' CA and file
// store, the audit chain's key); one in an instance's folder or the cache
// shows those. A folder of its own inside home shows only itself. Either
// may not exist yet (init makes both): the paths are compared as far as
// they exist, links followed, and by device and inode where both do.
func (c *Config) CheckWorkspace(home string) error {
	if home == "" || c.Workspace == "" {
		return nil
	}
	ws, h := resolvePath(c.Workspace), resolvePath(home)
	holdsHome := within(h, ws)
	if wst, err := os.Stat(ws); err == nil && !holdsHome {
		holdsHome = holds(wst, h)
	}
	if holdsHome {
		return fmt.Errorf("--workspace %s: the folder holds cowork's own folder %s (instances' disks, keys and audit logs), which the guest must not see; share a folder beside it, like ~/cowork-workspace", c.Workspace, home)
	}
	if rel, err := filepath.Rel(h, ws); err == nil && within(ws, h) {
		top := filepath.Join(h, strings.Split(rel, string(filepath.Separator))[0])
		_, err := os.Stat(filepath.Join(top, "config.json"))
		if filepath.Base(top) == CacheDir || err == nil {
			return fmt.Errorf("--workspace %s: the folder is in %s, an instance's or the cache's (disks, keys, logs), which the guest must not see; share a folder of its own", c.Workspace, top)
		}
	}
	return nil
}

// resolvePath is p absolute with links followed as far as it exists, the
// rest as given: where it would be once made.
func resolvePath(p string) string {
	p, _ = filepath.Abs(p)
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if dir == filepath.Dir(dir) {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// holds reports whether the folder dir is path or one of its parents, as
// the host finds them (path resolved).
func holds(dir os.FileInfo, path string) bool {
	for p := path; ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && os.SameFile(dir, st) {
			return true
		}
		if p == filepath.Dir(p) {
			return false
		}
	}
}

// ResolvedHost is the folder the host serves for m: its path with links
// followed (as CheckMountHosts judged it), or as given when that fails.
func (m Mount) ResolvedHost() string {
	if r, err := filepath.EvalSymlinks(m.Host); err == nil {
		return r
	}
	return m.Host
}
