package smallfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "meta.json")
	os.WriteFile(ok, []byte(`{"a":1}`), 0o600)
	if b, err := Read(ok); err != nil || string(b) != `{"a":1}` {
		t.Errorf("a small file: %q %v", b, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte(strings.Repeat("x", Max+1)), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(ok, link)
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o600)
	for _, p := range []string{big, link, fifo, dir, filepath.Join(dir, "none")} {
		if _, err := Read(p); err == nil {
			t.Errorf("%s: no error", filepath.Base(p))
		}
	}
}
