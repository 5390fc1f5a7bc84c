package initcmd

import (
	"context"
	"fmt"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// inspect asks what a local image and kernel are (either may be ""):
// cowork-hostd reads disks, the CLI does not link that code.
func (o *Options) inspect(ctx context.Context, img, kernel string) (hostdwire.Inspection, error) {
	if img == "" && kernel == "" {
		return hostdwire.Inspection{}, nil
	}
	if o.Inspect != nil {
		return o.Inspect(ctx, img, kernel)
	}
	return cowork.Inspect(ctx, img, kernel)
}

// pickArch makes the guest's architecture what the kernel, or else the
// disk image, is built for when --arch is not given: an arm64 image on an
// x86 machine makes an arm64 guest (emulated), rather than an x86 one
// that cannot boot it. A given --arch must agree with them. When neither
// tells, the guest is --arch, or this machine's architecture.
func (o *Options) pickArch(c *instance.Config, facts hostdwire.Inspection, kernel, img string) error {
	arch, from := builtFor(facts, kernel, img)
	switch {
	case arch == "":
	case o.Arch == "":
		c.Arch = arch
	case o.Arch != arch:
		return fmt.Errorf("--arch %s, but %s is built for %s; pass --arch %s, or leave --arch out", o.Arch, from, arch, arch)
	}
	return nil
}

// builtFor is the architecture a kernel (when given: it is what boots)
// or else a disk image's EFI loader is built for, and which file said so;
// "" when they do not tell (a bare file system, a compressed kernel).
func builtFor(facts hostdwire.Inspection, kernel, img string) (arch, from string) {
	if kernel != "" {
		if k := facts.Kernel; k != nil && k.Err == "" && k.Arch != "" {
			return k.Arch, "--kernel " + kernel
		}
		return "", ""
	}
	if i := facts.Image; i != nil && i.Err == "" && i.Arch != "" {
		return i.Arch, "--image " + img
	}
	return "", ""
}
