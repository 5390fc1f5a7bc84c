package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/image/inspect"
	"github.com/coworkhq/cowork/image/qcow2"
)

// An image from the internet that is a qcow2 overlay naming a file on the
// host (a private key, by a relative path from the download cache) must
// not get that file's bytes onto the guest's disk: init refuses it before
// any conversion, and neither the conversion nor the inspection opens it.
func TestAnImageNamingAHostFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(secret, []byte(strings.Repeat("PRIVATE KEY ", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "cloud.qcow2")
	if err := qcow2.CreateOverlay(evil, secret, 1<<20); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	err := MakeDisk(evil, disk, 1<<30, nil)
	if err == nil || !strings.Contains(err.Error(), "overlay on another file") {
		t.Fatalf("MakeDisk of an overlay on a host file: %v", err)
	}
	if _, err := os.Stat(disk); err == nil {
		t.Error("a disk was written")
	}
	if _, err := inspect.CheckDisk(evil); err == nil || !strings.Contains(err.Error(), "overlay on another file") {
		t.Errorf("CheckDisk: %v", err)
	}
	if f := inspect.Facts(evil, ""); f.Image == nil || !strings.Contains(f.Image.Err, "overlay on another file") {
		t.Errorf("Facts: %+v", f.Image)
	}

	// The same with the key as the image's external data file.
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("no qemu-img to make a qcow2 with an external data file")
	}
	ext := filepath.Join(dir, "ext.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-f", "qcow2", "-o", "data_file="+secret+",data_file_raw=on", ext, "48K").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	if err := MakeDisk(ext, disk, 1<<30, nil); err == nil || !strings.Contains(err.Error(), "keeps its data in another file") {
		t.Errorf("MakeDisk of a qcow2 on an external data file: %v", err)
	}
	if _, err := os.Stat(disk); err == nil {
		t.Error("a disk was written")
	}
}
