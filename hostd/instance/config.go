package instance

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/smallfile"
	"github.com/coworkhq/cowork/units"
)

// Defaults match the seed's VM: 4 CPUs, 4 GiB of memory, a 10 GiB disk.
const (
	DefaultCPUs   = 4
	DefaultMemory = 4 * units.GiB
	DefaultDisk   = 10 * units.GiB
	ShareTag      = "workspace" // the virtiofs tag the guest mounts at /workspace
)

// Limits a config must stay within, whatever the backend.
const (
	MinMemory = 256 * units.MiB
	MinDisk   = 1 * units.GiB
	MaxCPUs   = 64
)

// Config is an instance's settings in the user's terms, kept in config.json.
type Config struct {
	Name      string     `json:"name"`
	CPUs      int        `json:"cpus"`
	Memory    units.Size `json:"memory"`
	Disk      units.Size `json:"disk"`
	Workspace string     `json:"workspace"`
	// Mounts are host folders shared besides the workspace.
	Mounts []Mount `json:"mounts,omitempty"`
	// SSHAgent lends the guest the host's SSH agent (SSH_AUTH_SOCK where
	// hostd starts): its keys stay on the host (hostd/sshagent).
	SSHAgent bool `json:"ssh_agent,omitempty"`
	// Secrets are the host-held secrets the guest may use, by
	// placeholder (`cowork secret`): their values are kept apart
	// (hostd/secretstore).
	Secrets []Secret `json:"secrets,omitempty"`
	// Arch is the guest's architecture (GOARCH): arm64 or amd64.
	Arch string `json:"arch"`
	// Image is where the disk came from, for the record.
	Image string `json:"image,omitempty"`
	// Boot is "kernel" when the instance boots the kernel, initrd and
	// cmdline kept in its directory, else "efi" (the image's own loader).
	Boot    string `json:"boot"`
	Cmdline string `json:"cmdline,omitempty"`
	// Publish lists guest ports reachable from the host.
	Publish []Publish `json:"publish,omitempty"`
	// Network is the guest's egress policy.
	Network Network `json:"network"`
	// GuestUID is the uid of the guest user, the host user's so that files
	// in the workspace have one owner on both sides.
	GuestUID int `json:"guest_uid"`
	// InstanceID is the cloud-init instance-id: stable, so first-boot
	// provisioning runs once.
	InstanceID string `json:"instance_id"`
	// Provision replaces the default first-boot provisioning (the
	// toolchain, Node.js and Claude Code) when set.
	Provision *Provision `json:"provision,omitempty"`
	// With lists what first-boot provisioning adds to the guest on top of
	// Provision (or the default): WithDocker.
	With []string `json:"with,omitempty"`
	// DiskFormat is how the disk is kept: raw (disk.raw, the default,
	// also when empty) or qcow2 (disk.qcow2, a thin overlay on a golden
	// disk in the cache, where the file system cannot clone files).
	DiskFormat string `json:"disk_format,omitempty"`
	// Golden is the key of the golden disk the instance was cloned from
	// (image/golden); empty when it provisioned itself.
	Golden string `json:"golden,omitempty"`
	// MAC is the guest NIC's address; empty (most instances) derives it
	// from the name. A clone that resumes its source's saved memory keeps
	// the source's: the saved NIC holds it.
	MAC string `json:"mac,omitempty"`
	// Throwaway marks a clone made for one run and deleted after it
	// (`exec --rm`), or kept ready in its parent's pool for the next.
	Throwaway *Throwaway `json:"throwaway,omitempty"`
	// Backend is where the guest runs: BackendLocal (this machine) or
	// BackendKubeVirt, whose Cluster says where (cluster.go).
	Backend string    `json:"backend,omitempty"`
	Cluster *Cluster  `json:"cluster,omitempty"`
	Created time.Time `json:"created"`
}

// Throwaway is where a throwaway clone comes from: its parent instance
// and the parent's snapshot it was cloned from.
type Throwaway struct {
	Parent   string `json:"parent"`
	Snapshot string `json:"snapshot"`
	// Made is when the snapshot was taken, and Settings the digest of
	// the parent's settings (SettingsDigest), when the clone was made: a
	// clone whose parent has since changed them (its network policy, its
	// CPUs) or taken another snapshot of that name is no longer the
	// parent's, and no run gets it.
	Made     time.Time `json:"snapshot_made"`
	Settings string    `json:"settings"`
}

// SettingsDigest is a digest of what a clone copies of c: every setting
// but its name, identity, disk's file and ports.
func (c *Config) SettingsDigest() string {
	s := *c
	s.Name, s.Created, s.InstanceID, s.Publish, s.MAC, s.Throwaway = "", time.Time{}, "", nil, "", nil
	s.DiskFormat, s.Golden, s.Image = "", "", ""
	b, _ := json.Marshal(&s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Disk formats.
const (
	DiskRaw   = "raw"
	DiskQcow2 = "qcow2"
)

// Format is the disk's format, raw when the config predates the field.
func (c *Config) Format() string {
	if c.DiskFormat == "" {
		return DiskRaw
	}
	return c.DiskFormat
}

// DiskPath is the instance's disk file in p.
func (c *Config) DiskPath(p Paths) string { return p.DiskFor(c.Format()) }

// Provision is what cloud-init installs at first boot: distribution
// packages, then commands run as root.
type Provision struct {
	Packages []string `json:"packages"`
	Commands []string `json:"commands"`
}

// What `init --with` adds to a guest's provisioning.
const (
	// WithDocker is Docker Engine, its pulls through the auditing proxy.
	WithDocker = "docker"
)

// Withs are the names `init --with` takes.
var Withs = []string{WithDocker}

// Network is what the guest may reach, and how.
type Network struct {
	policy.Policy
	// Upstream is a proxy all egress leaves through (http:// or socks5://);
	// empty means the host's HTTPS_PROXY or ALL_PROXY, if set, when hostd starts.
	Upstream string `json:"upstream_proxy,omitempty"`
	// MaxFlows caps the connections and UDP flows the guest may have open
	// at once, MaxPending those of them being opened; more are refused.
	// TCPIdleSeconds closes a TCP flow quiet both ways for that long. 0
	// means netstack's defaults (1024, 256, 2 h 4 min).
	MaxFlows       int `json:"max_flows,omitempty"`
	MaxPending     int `json:"max_pending,omitempty"`
	TCPIdleSeconds int `json:"tcp_idle_seconds,omitempty"`
}

// MaxFlowsCeiling is the most network.max_flows may say: each flow can
// pin megabytes of hostd's memory.
const MaxFlowsCeiling = 1 << 20

// Boot methods.
const (
	BootEFI    = "efi"
	BootKernel = "kernel"
)

// DefaultWorkspace is ~/cowork-workspace.
func DefaultWorkspace() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return "cowork-workspace"
	}
	return filepath.Join(home, "cowork-workspace")
}

// HostArch is the guest architecture that runs fastest on this host.
func HostArch() string { return runtime.GOARCH }

// Validate checks the config in terms a user can act on. hostMemory is the
// machine's RAM (0 when unknown).
func (c *Config) Validate(hostMemory units.Size) error {
	var errs []error
	if err := ValidateName(c.Name); err != nil {
		errs = append(errs, err)
	}
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		errs = append(errs, fmt.Errorf("--cpus %d: want 1 to %d", c.CPUs, MaxCPUs))
	}
	switch {
	case c.Memory < MinMemory:
		errs = append(errs, fmt.Errorf("--memory %s is below the minimum of %s", c.Memory, MinMemory))
	case hostMemory > 0 && c.Memory > hostMemory:
		errs = append(errs, fmt.Errorf("--memory %s is more than this machine has (%s)", c.Memory, hostMemory))
	case c.Memory%units.MiB != 0:
		errs = append(errs, fmt.Errorf("--memory %s: use whole MiB", c.Memory))
	}
	if f := c.Format(); f != DiskRaw && f != DiskQcow2 {
		errs = append(errs, fmt.Errorf("disk format %q: want raw or qcow2", c.DiskFormat))
	}
	if c.Disk < MinDisk {
		errs = append(errs, fmt.Errorf("--disk %s is below the minimum of %s", c.Disk, MinDisk))
	}
	if c.Workspace == "" || !filepath.IsAbs(c.Workspace) {
		errs = append(errs, fmt.Errorf("--workspace %q: want an absolute path", c.Workspace))
	}
	if c.Arch != "arm64" && c.Arch != "amd64" {
		errs = append(errs, fmt.Errorf("guest architecture %q: want arm64 or amd64", c.Arch))
	}
	if c.MAC != "" {
		if mac, err := net.ParseMAC(c.MAC); err != nil || len(mac) != 6 || mac[0]&1 != 0 || mac[0]&2 == 0 {
			errs = append(errs, fmt.Errorf("mac %q: want a locally administered unicast address, like 52:54:00:12:34:56", c.MAC))
		}
	}
	if c.Boot != BootEFI && c.Boot != BootKernel {
		errs = append(errs, fmt.Errorf("boot method %q: want efi or kernel", c.Boot))
	}
	if c.Boot != BootKernel && c.Cmdline != "" {
		errs = append(errs, errors.New("--cmdline needs --kernel"))
	}
	if _, err := policy.Compile(c.Network.Policy, netip.Addr{}, nil); err != nil {
		errs = append(errs, err)
	}
	if n := c.Network; n.MaxFlows < 0 || n.MaxFlows > MaxFlowsCeiling || n.MaxPending < 0 || n.TCPIdleSeconds < 0 {
		errs = append(errs, fmt.Errorf("network limits max_flows %d, max_pending %d, tcp_idle_seconds %d: want 0 (the default) or more, max_flows at most %d",
			n.MaxFlows, n.MaxPending, n.TCPIdleSeconds, MaxFlowsCeiling))
	}
	errs = append(errs, c.validateMounts()...)
	errs = append(errs, c.validateBackend()...)
	withs := map[string]bool{}
	for _, w := range c.With {
		switch {
		case !slices.Contains(Withs, w):
			errs = append(errs, fmt.Errorf("--with %q: cowork does not know it; want one of %s", w, strings.Join(Withs, ", ")))
		case withs[w]:
			errs = append(errs, fmt.Errorf("--with %s is given twice", w))
		}
		withs[w] = true
	}
	if len(c.Publish) > MaxPublish {
		errs = append(errs, fmt.Errorf("--publish: %d ports, more than an instance publishes (%d)", len(c.Publish), MaxPublish))
	}
	seen := map[string]bool{}
	for _, p := range c.Publish {
		if seen[p.HostAddr()] {
			errs = append(errs, fmt.Errorf("--publish: %s is published twice", p.HostAddr()))
		}
		seen[p.HostAddr()] = true
	}
	return errors.Join(errs...)
}

// Load reads the named instance's config.
func Load(name string) (*Config, error) {
	dir, err := Dir(name)
	if err != nil {
		return nil, err
	}
	return loadFrom(dir, name)
}

// loadFrom reads the config in dir, of the instance name.
func loadFrom(dir, name string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &NotFoundError{Name: name}
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "config.json"), err)
	}
	return &c, nil
}

// Save writes the config atomically (a crash leaves the old one or the new).
func (c *Config) Save(dir string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, "config.json"), append(b, '\n'), 0o600)
}

// UpdateConfig changes the saved config of the instance name: read fresh
// under a lock of the config's own (config.lock), changed, saved. The CLI
// and a running hostd both write the config; each changes only what it
// changes, so neither writes back a copy that lost the other's change.
func UpdateConfig(name string, change func(*Config) error) (*Config, error) {
	dir, err := Dir(name)
	if err != nil {
		return nil, err
	}
	return UpdateConfigIn(dir, name, change)
}

// UpdateConfigIn is UpdateConfig for the instance name in dir.
func UpdateConfigIn(dir, name string, change func(*Config) error) (*Config, error) {
	lock, err := LockFile(filepath.Join(dir, "config.lock"), true)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	c, err := loadFrom(dir, name)
	if err != nil {
		return nil, err
	}
	if err := change(c); err != nil {
		return nil, err
	}
	return c, c.Save(dir)
}

// SaveDisk saves c's disk format and golden disk, and nothing else of c,
// into the config in dir (UpdateConfigIn): what changes a disk leaves the
// rest as another writer may have made it.
func (c *Config) SaveDisk(dir string) error {
	_, err := UpdateConfigIn(dir, c.Name, func(saved *Config) error {
		saved.DiskFormat, saved.Golden = c.DiskFormat, c.Golden
		return nil
	})
	return err
}

// WriteFileAtomic writes data to a temporary file and renames it over path
// (smallfile.WriteAtomic).
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return smallfile.WriteAtomic(path, data, mode)
}

// NotFoundError says an instance does not exist, and how to make one.
type NotFoundError struct{ Name string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("instance %s does not exist; create it with `cowork init%s`", e.Name, NameFlag(e.Name))
}

// ExpandHome turns a leading ~ into the home directory.
func ExpandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, strings.TrimPrefix(p, "~"))
		}
	}
	return p
}

// Secret is a host-held secret of an instance: what the guest may know of
// it, and where its value is kept. hostd/netstack.Secret says what each
// field means.
type Secret struct {
	Name        string    `json:"name"`
	Host        string    `json:"host"` // name:port
	Mode        string    `json:"mode"`
	Header      string    `json:"header,omitempty"`
	Placeholder string    `json:"placeholder"`
	CA          string    `json:"ca,omitempty"` // PEM, trusted for Host besides the host's roots
	Store       string    `json:"store"`        // hostd/secretstore: keychain, secret-service, file
	Set         time.Time `json:"set"`
}
