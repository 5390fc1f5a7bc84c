package hostd

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/image/qcow2"
)

// A saved state resumes on an overlay only when the overlay is empty and
// sits on the very file the state was saved with: data written into it
// since, or a layer that changed or is another file, refuses it.
func TestOnSavedLayer(t *testing.T) {
	dir := t.TempDir()
	layer := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(layer, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	stamp, err := savestate.Stamp(layer)
	if err != nil {
		t.Fatal(err)
	}
	m := &savestate.Manifest{VM: savestate.VM{Disk: layer, DiskFormat: "raw"}, Disk: stamp}
	overlay := filepath.Join(dir, "disk.qcow2")
	if err := qcow2.CreateOverlayOn(overlay, layer, "raw", 1<<20); err != nil {
		t.Fatal(err)
	}
	if !onSavedLayer(overlay, m) {
		t.Fatal("an empty overlay on the saved disk is refused")
	}
	if onSavedLayer(layer, m) {
		t.Error("the raw disk itself counts as an overlay")
	}
	other := *m
	other.VM.DiskFormat = "qcow2"
	if onSavedLayer(overlay, &other) {
		t.Error("a layer of another format is accepted")
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(layer, later, later)
	if onSavedLayer(overlay, m) {
		t.Error("a layer written since the save is accepted")
	}
	back := time.Unix(0, stamp.MtimeNs)
	os.Chtimes(layer, back, back)
	if !onSavedLayer(overlay, m) {
		t.Fatal("the layer as it was is refused")
	}

	qemuIO, err := exec.LookPath("qemu-io")
	if err != nil {
		t.Skip("qemu-io is not on PATH (install qemu-utils to run the rest)")
	}
	if out, err := exec.Command(qemuIO, "-f", "qcow2", "-c", "write -P 0xab 0 64k", overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	if onSavedLayer(overlay, m) {
		t.Error("an overlay the guest wrote into since is accepted")
	}
}
