package instance

import (
	"fmt"
	"io"
	"os"

	"github.com/coworkhq/cowork/image"
)

// Sources are the files a new instance is made from.
type Sources struct {
	Image  string // a raw disk image, copied sparsely and grown to the disk size
	Kernel string // with Initrd: boot this kernel directly instead of EFI
	Initrd string
}

// ExistsError says the instance is already there, and what to do instead.
type ExistsError struct{ Name string }

func (e *ExistsError) Error() string {
	flag := ""
	if e.Name != DefaultName {
		flag = " --name " + e.Name
	}
	return fmt.Sprintf("instance %s already exists; start it with `cowork start%s`, or remove it first with `cowork delete%s`", e.Name, flag, flag)
}

// Create makes the instance directory with its disk (converted from the
// image, grown to the disk size) and config, and the workspace if missing.
// It writes config.json last: an instance exists only once complete, and a
// failed Create removes what it made.
func Create(c *Config, src Sources, convert image.Progress) (err error) {
	p, err := PathsFor(c.Name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p.Config()); err == nil {
		return &ExistsError{Name: c.Name}
	}
	// A directory without a config is what an interrupted init left.
	if err := os.RemoveAll(p.Dir()); err != nil {
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
	if err := image.MakeDisk(src.Image, p.Disk(), int64(c.Disk), convert); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Workspace, 0o755); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	c.Image = src.Image
	return c.Save(p.Dir())
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
