// Package machine is the boundary between hostd and a hypervisor: a Config
// with everything resolved to paths and descriptors, and the small Machine
// interface that the QEMU and vz backends implement. A backend translates
// the Config; it decides nothing.
package machine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Config is one VM, ready to run.
type Config struct {
	Arch   string // guest GOARCH: arm64 or amd64
	CPUs   int
	Memory int64 // bytes

	Disk string // disk image, read-write
	// DiskFormat is Disk's: raw (also when empty) or qcow2, a thin
	// overlay on a golden disk (QEMU only; vz takes raw disks).
	DiskFormat string
	CIData     string // read-only ISO, optional

	// Boot: Kernel set means direct kernel boot; otherwise EFI firmware
	// with its variables in EFIVars.
	Kernel, Initrd, Cmdline string
	EFIVars                 string
	// MachineID keeps the platform's machine identifier across boots
	// (vz's generic platform); made on first boot.
	MachineID string

	// Shares are the host folders the guest mounts over virtiofs, the
	// workspace first.
	Shares []Share
	// ShareUID and ShareGID are the guest user's: inside the guest a
	// share's owner is that user, and whatever the guest makes in it
	// belongs on the host to the share's owner (see hostd/fsjail).
	ShareUID, ShareGID int

	// Network is the VM's end of a SOCK_DGRAM socketpair carrying one
	// Ethernet frame per datagram; MAC is the guest NIC's address. The
	// caller keeps it and closes it once Start has returned: a backend
	// needing the descriptor for the VM's life holds its own copy (QEMU's
	// child inherits one; vz, which uses the bare descriptor, a duplicate).
	Network *os.File
	MAC     net.HardwareAddr
	MTU     int // 0 means 1500

	// Console is where the guest's serial console goes: the write end of
	// a pipe hostd drains into serial.log (hostd/console), never a file
	// the hypervisor would grow without bound. Like Network, the caller
	// keeps it and closes it once Start has returned (QEMU's child
	// inherits a copy; vz holds a duplicate).
	Console *os.File
	RunDir  string // private sockets and pid files of this run
	// CacheDir is where a backend keeps what it learned about this host
	// between runs (QEMU: whether KVM really runs guests); empty keeps
	// nothing, and the backend finds out again at every start.
	CacheDir string

	// PowerOff, when set, asks the guest to power off cleanly (hostd: its
	// agent, which syncs the disks first). Stop tries it before the
	// hypervisor's power button (see PowerOffWithin).
	PowerOff func(ctx context.Context) error
}

// Share is a host folder the guest mounts by its virtiofs tag.
type Share struct {
	Dir string
	Tag string
	// ReadOnly: the host serves it read-only, whatever the guest does.
	ReadOnly bool
}

// MaxShares bounds a VM's shares: each is a device (under QEMU behind
// a PCIe root port of its own) and a file server process.
const MaxShares = 9

// PowerOffWithin is how a backend's Stop asks the guest to power off and
// waits for it: through PowerOff when there is one, else, or when that
// fails, by pressing button (the hypervisor's power button); then it waits
// up to timeout for done (the VM's Done) to close. nil means the guest went
// down by itself; an error says why the caller must now cut the power:
// asking failed, the time ran out, or ctx ended.
func (c *Config) PowerOffWithin(ctx context.Context, timeout time.Duration, button func() error, done <-chan struct{}) error {
	wait := time.NewTimer(timeout)
	defer wait.Stop()
	if err := c.askPowerOff(ctx, button); err != nil {
		return fmt.Errorf("could not ask the guest to power off: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-wait.C:
		return fmt.Errorf("the guest did not power off within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// askPowerOff asks once; it returns once asked, not once off.
func (c *Config) askPowerOff(ctx context.Context, button func() error) error {
	if c.PowerOff != nil {
		err := c.PowerOff(ctx)
		if err == nil {
			return nil
		}
		if berr := button(); berr != nil {
			return fmt.Errorf("%w; the power button: %w", err, berr)
		}
		return nil
	}
	return button()
}

// Validate checks what a backend relies on.
func (c *Config) Validate() error {
	var errs []error
	if c.Arch != "arm64" && c.Arch != "amd64" {
		errs = append(errs, fmt.Errorf("arch %q", c.Arch))
	}
	if c.CPUs < 1 {
		errs = append(errs, fmt.Errorf("cpus %d", c.CPUs))
	}
	if c.Memory < 1<<20 {
		errs = append(errs, fmt.Errorf("memory %d", c.Memory))
	}
	for what, p := range map[string]string{"disk": c.Disk, "run dir": c.RunDir} {
		if p == "" || !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s path %q is not absolute", what, p))
		}
	}
	if c.DiskFormat != "" && c.DiskFormat != "raw" && c.DiskFormat != "qcow2" {
		errs = append(errs, fmt.Errorf("disk format %q", c.DiskFormat))
	}
	if c.Kernel == "" && c.EFIVars == "" {
		errs = append(errs, errors.New("neither a kernel nor an EFI variable store"))
	}
	if len(c.Shares) > MaxShares {
		errs = append(errs, fmt.Errorf("%d shares, more than %d", len(c.Shares), MaxShares))
	}
	tags := map[string]bool{}
	for _, s := range c.Shares {
		if s.Tag == "" || !filepath.IsAbs(s.Dir) {
			errs = append(errs, fmt.Errorf("share %q of %q: a share needs an absolute directory and a tag", s.Tag, s.Dir))
		}
		if tags[s.Tag] {
			errs = append(errs, fmt.Errorf("share tag %q given twice", s.Tag))
		}
		tags[s.Tag] = true
	}
	if c.Network == nil {
		errs = append(errs, errors.New("no network"))
	}
	if c.Console == nil {
		errs = append(errs, errors.New("no console"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("machine config: %w", err)
	}
	return nil
}

// State is where a VM is in its life.
type State string

const (
	Starting State = "starting"
	Running  State = "running"
	// Paused is a guest a Saver saved, or loaded and has not run on yet.
	Paused   State = "paused"
	Stopping State = "stopping"
	Stopped  State = "stopped"
)

// Machine is a running (or about to run) VM.
type Machine interface {
	// Start boots the VM and returns once the hypervisor runs it.
	Start(ctx context.Context) error
	// State is the VM's current state.
	State() State
	// Done is closed when the VM has stopped, for any reason; Err then says why
	// when it was not asked to stop.
	Done() <-chan struct{}
	Err() error
	// Stop asks the guest to power off (Config.PowerOffWithin), and cuts the
	// power if it has not within timeout (at once when timeout is 0). The
	// VM is then stopped as asked: Err stays nil, however it went down.
	// It is the one way hostd stops a VM.
	Stop(ctx context.Context, timeout time.Duration) error
	// DialAgent opens a new channel to the guest agent.
	DialAgent(ctx context.Context) (net.Conn, error)
}

// Describer is a Machine that can say what runs it, for `cowork status`.
type Describer interface {
	// Backend names the hypervisor and its accelerator, e.g. "qemu", "tcg".
	Backend() (name, accel string)
}
