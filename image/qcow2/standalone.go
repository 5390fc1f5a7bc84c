package qcow2

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// CheckStandalone refuses a qcow2 image that names a backing file or an
// external data file, and lets any other file through (raw, another
// format, a standalone qcow2).
// Readers of images (go-qcow2reader, QEMU) open the backing file a
// header names, wherever it is: an image from the internet naming
// ../../.ssh/id_ed25519 would put that key on the guest's disk. Images
// cowork is given are cloud images, standalone; only the overlays cowork
// writes itself on golden disks have a backing file.
func CheckStandalone(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	magic := make([]byte, 4)
	_, err = io.ReadFull(f, magic)
	f.Close()
	if err != nil || !bytes.Equal(magic, []byte("QFI\xfb")) {
		return nil // too short, or not qcow2: not this check's business
	}
	info, err := ReadInfo(path)
	if err != nil {
		return err
	}
	if info.DataFile != "" || info.ExternalData {
		return fmt.Errorf("image %s is a qcow2 that keeps its data in another file (%q), which cowork does not open; give a standalone image (flatten it with `qemu-img convert -O qcow2 %s flat.qcow2`)", path, info.DataFile, path)
	}
	if info.Backing != "" {
		return fmt.Errorf("image %s is a qcow2 overlay on another file (%q), which cowork does not open; give a standalone image (flatten it with `qemu-img convert -O qcow2 %s flat.qcow2`)", path, info.Backing, path)
	}
	return nil
}
