package image

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/internal/permtest"
)

// The image cache (and the directories Fetch makes for it), the downloads
// in it, the disks made from them and the seed ISO (which carries the
// provisioning commands, as the instance's config does) are their owner's
// alone, whatever the umask.
func TestImageFilesAreOwnerOnly(t *testing.T) {
	permtest.ClearUmask(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("an image"))
	}))
	defer srv.Close()
	cache := filepath.Join(t.TempDir(), "cache", "images")
	got, err := Fetch(context.Background(), nil, srv.URL+"/cloud.img", "", cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	permtest.WantMode(t, filepath.Dir(cache), 0o700)
	permtest.WantMode(t, cache, 0o700)
	permtest.WantMode(t, got, 0o600)

	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := MakeDisk(got, disk, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	permtest.WantMode(t, disk, 0o600)

}

// A conversion cut short leaves disk.raw.tmp behind; the next one must not
// keep its bytes where the image has holes (the converter skips zeros, so
// only a truncated file reads as zeros there).
func TestMakeDiskOverAStaleTemporary(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	img := make([]byte, 1<<20)
	copy(img[4096:], "data in the middle of zeros")
	os.WriteFile(src, img, 0o600)
	disk := filepath.Join(dir, "disk.raw")
	os.WriteFile(disk+".tmp", bytes.Repeat([]byte{0xAA}, 2<<20), 0o600)

	if err := MakeDisk(src, disk, 2<<20, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(disk)
	want := append(img, make([]byte, 1<<20)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("the disk (%d bytes) is not the image followed by zeros: a stale temporary's bytes survived (%d of 0xAA)",
			len(b), bytes.Count(b, []byte{0xAA}))
	}
}
