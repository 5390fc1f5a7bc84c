package inspect

import "github.com/coworkhq/cowork/internal/hostdwire"

// Facts is what `cowork-hostd inspect` answers: whether image (when not
// "") is a disk cowork boots and what it is built for, and what kernel's
// header says. A file that is not what it should be is a fact here, not
// an error: the CLI words it for its own flags.
func Facts(image, kernel string) hostdwire.Inspection {
	var out hostdwire.Inspection
	if image != "" {
		f := &hostdwire.ImageFacts{}
		if format, err := CheckDisk(image); err != nil {
			f.Err = err.Error()
		} else {
			f.Format = format
			if arch, err := ImageArch(image); err == nil {
				f.Arch = arch
			}
		}
		out.Image = f
	}
	if kernel != "" {
		k, err := KernelInfo(kernel)
		out.Kernel = &hostdwire.KernelFacts{Arch: k.Arch, Compressed: k.Compressed}
		if err != nil {
			out.Kernel.Err = err.Error()
		}
	}
	return out
}
