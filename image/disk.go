package image

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/lima-vm/go-qcow2reader"

	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/lima-vm/go-qcow2reader/convert"
)

// MakeDisk writes a raw disk of size bytes from src, a qcow2 or raw image
// (or any format go-qcow2reader knows). Blocks of zeros stay holes, so the
// disk takes only what the image holds. It writes to dst.tmp and renames
// it into place when done.
func MakeDisk(src, dst string, size int64, p Progress) error {
	if p == nil {
		p = noProgress{}
	}
	if err := qcow2.CheckStandalone(src); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer in.Close()
	img, err := qcow2reader.Open(in)
	if err != nil {
		return fmt.Errorf("image %s: %w", src, err)
	}
	defer img.Close()
	if err := img.Readable(); err != nil {
		return fmt.Errorf("image %s (%s) cannot be read: %w", src, img.Type(), err)
	}
	virtual := img.Size()
	if virtual > size {
		return &TooSmallError{Image: src, ImageSize: virtual, DiskSize: size}
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// The target must start as zeros: a sparse file of the final size.
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	u := &updater{p: p, total: virtual}
	// One worker per CPU: more only contend (8, the library's default, was
	// several times slower on two CPUs than two).
	workers := min(max(runtime.NumCPU(), 2), 8)
	if err := convert.Convert(out, img, convert.Options{Progress: u, Workers: workers}); err != nil {
		out.Close()
		return fmt.Errorf("convert %s: %w", src, err)
	}
	// No fsync, like qemu-img: QEMU reads the disk through the same page
	// cache, and flushing 10 GiB of fresh image first only makes init wait.
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// TooSmallError is a disk size below what the image needs.
type TooSmallError struct {
	Image               string
	ImageSize, DiskSize int64
}

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("--disk %s is smaller than the image %s (%s); give a larger --disk", human(e.DiskSize), e.Image, human(e.ImageSize))
}

// updater adapts go-qcow2reader's progress (called from many goroutines).
type updater struct {
	p     Progress
	done  atomic.Int64
	total int64
}

func (u *updater) Update(n int64) { u.p.Update(u.done.Add(n), u.total) }

func human(n int64) string {
	const gib = 1 << 30
	if n >= gib {
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
