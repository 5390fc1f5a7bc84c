package instance

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coworkhq/cowork/internal/units"
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

// Create makes the instance directory with its disk and config, and the
// workspace if missing. It writes config.json last: an instance exists
// only once complete, and a failed Create removes what it made.
func Create(c *Config, src Sources) (err error) {
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
	if err := makeDisk(src.Image, p.Disk(), c.Disk); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Workspace, 0o755); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	c.Image = src.Image
	return c.Save(p.Dir())
}

// makeDisk copies a raw image into a sparse disk of the given size.
func makeDisk(image, disk string, size units.Size) error {
	in, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("image %s is not a regular file", image)
	}
	if units.Size(st.Size()) > size {
		return fmt.Errorf("--disk %s is smaller than the image %s (%s); give a larger --disk", size, image, units.Size(st.Size()))
	}
	magic := make([]byte, 4)
	if _, err := io.ReadFull(in, magic); err == nil && bytes.Equal(magic, []byte("QFI\xfb")) {
		return fmt.Errorf("image %s is qcow2; convert it to raw first (qemu-img convert -O raw %s disk.raw)", image, image)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tmp := disk + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := copySparse(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy image: %w", err)
	}
	if err := out.Truncate(int64(size)); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, disk)
}

// copySparse copies in to out, seeking over blocks of zeros so that they
// stay holes in out.
func copySparse(out *os.File, in io.Reader) error {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			for i := 0; i < n; i += 64 << 10 {
				block := buf[i:min(i+64<<10, n)]
				if !allZero(block) {
					if _, err := out.WriteAt(block, off+int64(i)); err != nil {
						return err
					}
				}
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return out.Truncate(off)
		}
		if err != nil {
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
