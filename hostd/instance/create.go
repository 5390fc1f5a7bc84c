package instance

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/units"
)

// Sources are the files a new instance is made from.
type Sources struct {
	Image  string // a raw disk image, copied sparsely and grown to the disk size
	Kernel string // with Initrd: boot this kernel directly instead of EFI
	Initrd string
	// Golden is the key of a golden disk (image/golden) made from Image
	// and the instance's provisioning: the disk is cloned from it rather
	// than converted from Image, and the guest needs no provisioning.
	Golden string
}

// ExistsError says the instance is already there, and what to do instead.
type ExistsError struct{ Name string }

func (e *ExistsError) Error() string {
	flag := NameFlag(e.Name)
	return fmt.Sprintf("instance %s already exists; start it with `cowork start%s`, or remove it first with `cowork delete%s`", e.Name, flag, flag)
}

// MakeDisk writes the instance's disk in p, grown to size bytes: a clone
// of the golden disk src.Golden when set, else a conversion of the image
// src.Image. It returns the disk's format (DiskRaw or DiskQcow2) and
// leaves no disk when it fails. cowork-hostd does it (see cowork.Create),
// so the CLI links no image reader.
type MakeDisk func(src Sources, p Paths, size int64) (format string, err error)

// Create makes the instance directory with its disk (made by makeDisk from
// the image, grown to the disk size) and config, and the workspace if
// missing. It writes config.json last: an instance exists only once
// complete, and a failed Create removes what it made.
func Create(c *Config, src Sources, makeDisk MakeDisk) error {
	return CreateWith(c, src, makeDisk, nil)
}

// CreateWith is Create, calling onDir (when not nil) with the instance's
// folder as soon as it is made, before anything is in it: a throwaway's
// claim is taken there (see CloneOptions.OnDir).
func CreateWith(c *Config, src Sources, makeDisk MakeDisk, onDir func(dir string) error) (err error) {
	p, err := PathsFor(c.Name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p.Config()); err == nil {
		return &ExistsError{Name: c.Name}
	}
	// A directory without a config is what an interrupted init left, and
	// is made again; anything else there is not Create's to remove.
	if err := removeLeftover(p); err != nil {
		return err
	}
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p.Dir())
		}
	}()
	if onDir != nil {
		if err := onDir(p.Dir()); err != nil {
			return err
		}
	}
	if src.Kernel != "" {
		if err := copyFile(src.Kernel, p.Kernel()); err != nil {
			return fmt.Errorf("copy kernel: %w", err)
		}
		if src.Initrd != "" {
			if err := copyFile(src.Initrd, p.Initrd()); err != nil {
				return fmt.Errorf("copy initrd: %w", err)
			}
		}
	}
	format, err := makeDisk(src, p, int64(c.Disk))
	if err != nil {
		return err
	}
	if format != DiskRaw {
		c.DiskFormat = format
	}
	c.Golden = src.Golden
	if err := os.MkdirAll(c.Workspace, 0o755); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	c.Image = src.Image
	return c.Save(p.Dir())
}

// leftover names what an interrupted Create leaves in an instance's
// directory (before it writes config.json, last).
var leftover = map[string]bool{"disk.raw": true, "disk.raw.tmp": true, "disk.qcow2": true, "disk.qcow2.tmp": true, "kernel": true, "initrd": true}

// CheckLeftover says whether the directory of an instance without a
// config (p.Dir(), if it exists) is what an interrupted Create left, which
// the next Create makes again. A directory holding anything Create does
// not make (a log, EFI variables: an instance that has run and lost its
// config; or a folder that is no instance at all, in an odd COWORK_HOME)
// is not Create's to remove: the error says so.
func CheckLeftover(p Paths) error {
	entries, err := os.ReadDir(p.Dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var foreign []string
	for _, e := range entries {
		// config.json's temporary files (WriteFileAtomic) are leftovers too.
		if !leftover[e.Name()] && !strings.HasPrefix(e.Name(), ".config.json.") {
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	if len(foreign) > 5 {
		foreign = append(foreign[:5], "...")
	}
	return fmt.Errorf("%s exists and is not an instance (no config.json; it holds %s); nothing was changed: pick another --name, or move that folder away",
		p.Dir(), strings.Join(foreign, ", "))
}

// removeLeftover removes what an interrupted Create left, and only that.
func removeLeftover(p Paths) error {
	if err := CheckLeftover(p); err != nil {
		return err
	}
	return os.RemoveAll(p.Dir())
}

// Finish checks what Create made, for an init that goes on after an
// interruption: the disk (whole, since MakeDisk renames it into place
// only when complete) grown to the configured size if it is short, and
// the kernel files of a kernel-boot instance. It must not run while the
// instance runs.
func Finish(c *Config) error {
	p, err := PathsFor(c.Name)
	if err != nil {
		return err
	}
	redo := fmt.Sprintf("; remove the instance with `cowork delete%s` and init it again", NameFlag(c.Name))
	need := []string{c.DiskPath(p)}
	if c.Boot == BootKernel {
		need = append(need, p.Kernel())
	}
	for _, f := range need {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("instance %s is incomplete: %w%s", c.Name, err, redo)
		}
	}
	// A larger disk is a `disk resize` cut short before it saved the config.
	if have, err := DiskSize(c.DiskPath(p)); err == nil && have < int64(c.Disk) {
		if err := GrowDisk(c.DiskPath(p), int64(c.Disk)); err != nil {
			return fmt.Errorf("instance %s: grow the disk: %w", c.Name, err)
		}
	}
	return nil
}

// NameFlag is the --name flag that selects the instance in a command to
// suggest: nothing for the default instance.
func NameFlag(name string) string {
	if name == DefaultName {
		return ""
	}
	return " --name " + name
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// DiskSize is the size the guest sees of the disk file at path: a raw
// file's length, or a qcow2 overlay's virtual size (disk.qcow2).
func DiskSize(path string) (int64, error) {
	if strings.HasSuffix(path, ".qcow2") {
		info, err := qcow2.ReadInfo(path)
		if err != nil {
			return 0, err
		}
		return info.Size, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// GrowDisk grows a disk (raw, or a qcow2 overlay) to size bytes and never
// shrinks it: the guest grows its partition and file system at its next
// boot (growpart).
func GrowDisk(disk string, size int64) error {
	have, err := DiskSize(disk)
	if err != nil {
		return err
	}
	if size < have {
		return fmt.Errorf("the disk is %s; it can grow but never shrink (asked for %s)", units.Size(have), units.Size(size))
	}
	if size == have {
		return nil
	}
	if strings.HasSuffix(disk, ".qcow2") {
		return qcow2.Resize(disk, size)
	}
	return os.Truncate(disk, size)
}
