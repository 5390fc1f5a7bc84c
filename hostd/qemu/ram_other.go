//go:build !linux

package qemu

import (
	"errors"
	"os"
)

// errNoMemfd: QEMU's guest RAM is a memfd, which only Linux has.
var errNoMemfd = errors.New("QEMU guests need a Linux host here (the guest's memory is a memfd); on a Mac cowork uses Virtualization.framework")

func newGuestRAM(int64) (*os.File, error) { return nil, errNoMemfd }

func copyExtents(*os.File, *os.File, int64) (int64, error) { return 0, errNoMemfd }
