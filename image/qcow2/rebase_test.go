package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyFile copies src to dst, as a clone copies a layer before its rebase.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A chain copied into another folder and rebased onto the copies reads as
// the original does, through QEMU: what each layer holds, down to the raw
// base; qemu-img finds nothing wrong; the headers name the new files.
func TestRebaseACopiedChain(t *testing.T) {
	qemuImg := needTool(t, "qemu-img")
	qemuIO := needTool(t, "qemu-io")
	const size = 8 * clusterSize
	top, mid, _ := newChain(t, size)
	io := func(path string, cmds ...string) string {
		t.Helper()
		args := []string{"-f", "qcow2"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out, err := exec.Command(qemuIO, append(args, path)...).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("failed")) || bytes.Contains(out, []byte("Pattern verification failed")) {
			t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
		}
		return string(out)
	}
	io(mid, "write -P 0x11 64k 64k")
	io(top, "write -P 0x22 128k 64k")

	dir := t.TempDir()
	base := filepath.Join(filepath.Dir(mid), "disk.raw")
	base2, mid2, top2 := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	copyFile(t, base, base2)
	copyFile(t, mid, mid2)
	copyFile(t, top, top2)
	if err := Rebase(mid2, base2, FormatRaw); err != nil {
		t.Fatal(err)
	}
	if err := Rebase(top2, mid2, FormatQcow2); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ path, backing, format string }{{mid2, base2, "raw"}, {top2, mid2, "qcow2"}} {
		info, err := ReadInfo(p.path)
		if err != nil || info.Backing != p.backing || info.BackingFormat != p.format {
			t.Errorf("%s: %+v %v", p.path, info, err)
		}
		qemuCheck(t, qemuImg, p.path)
	}
	if got := qemuImgInfo(t, qemuImg, top2); got.Backing != mid2 || got.BackingFormat != "qcow2" || got.VirtualSize != size {
		t.Errorf("qemu-img info: %+v", got)
	}
	// The copies' data, each from its own layer, none from the originals.
	os.Chmod(mid, 0o600)
	os.Truncate(mid, 0)
	io(top2, "read -P 0x11 64k 64k", "read -P 0x22 128k 64k")
}

// An image QEMU made itself (its feature table extension and all) keeps
// its other extensions through a rebase.
func TestRebaseKeepsQEMUsExtensions(t *testing.T) {
	qemuImg := needTool(t, "qemu-img")
	dir := t.TempDir()
	base, _ := makeBacking(t, dir, backingSize)
	img := filepath.Join(dir, "made-by-qemu.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", img, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	other := filepath.Join(t.TempDir(), "disk.raw")
	copyFile(t, base, other)
	if err := Rebase(img, other, FormatRaw); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, qemuImg, img)
	out, err := exec.Command(qemuImg, "info", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file: "+other) {
		t.Errorf("qemu-img info after the rebase: %v\n%s", err, out)
	}
}

// What a rebase refuses leaves the file as it was.
func TestRebaseRefuses(t *testing.T) {
	overlay, backing, _ := newOverlay(t, 8*clusterSize)
	before, _ := os.ReadFile(overlay)
	for _, tc := range []struct{ backing, format, want string }{
		{"relative/disk.raw", FormatRaw, "not an absolute path"},
		{backing, "vmdk", "want raw or qcow2"},
		{"/" + strings.Repeat("x", 1100), FormatRaw, "above the limit"},
	} {
		if err := Rebase(overlay, tc.backing, tc.format); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rebase onto %.20q (%s): %v, want %q", tc.backing, tc.format, err, tc.want)
		}
	}
	if after, _ := os.ReadFile(overlay); !bytes.Equal(before, after) {
		t.Error("a refused rebase changed the file")
	}
	if err := Rebase(filepath.Join(t.TempDir(), "none.qcow2"), backing, FormatRaw); err == nil {
		t.Error("a missing file: no error")
	}
	// A name too long for the first cluster once the header is there.
	if _, err := rebasedCluster(before[:headerLenV3+64], "/"+strings.Repeat("y", 200), FormatRaw); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("a header that does not fit: %v", err)
	}
}
