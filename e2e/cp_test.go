//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkCopy is `cowork cp` both ways on a running instance: modes, times
// and links kept, the files the receiver's; what comes from the guest made
// safe (no setuid bit, no fifo, links not followed); refusals that leave
// nothing behind, in the guest too when its disk is full.
func checkCopy(t *testing.T, e *env) {
	host := t.TempDir()
	proj := filepath.Join(host, "proj")
	os.MkdirAll(filepath.Join(proj, "bin"), 0o755)
	os.WriteFile(filepath.Join(proj, "a.txt"), []byte("from the host\n"), 0o640)
	os.WriteFile(filepath.Join(proj, "bin/run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("a.txt", filepath.Join(proj, "link"))
	when := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	os.Chtimes(filepath.Join(proj, "a.txt"), when, when)

	r := e.must("cp", proj, ":/tmp/")
	if !strings.Contains(r.errOut, "copied 2 files, 2 folders, 1 link") {
		t.Errorf("cp in: %s", r)
	}
	got := e.must("exec", "-u", "root", "cd /tmp/proj && stat -c '%a %U %n' a.txt bin/run.sh && readlink link && stat -c %Y a.txt && cat a.txt").out
	want := "640 cowork a.txt\n755 cowork bin/run.sh\na.txt\n1706933106\nfrom the host\n"
	if got != want {
		t.Errorf("in the guest:\n%s\nwant:\n%s", got, want)
	}

	// Out: root's files in the guest, as a hostile guest would leave them.
	e.must("exec", "-u", "root", "mkdir -p /tmp/out && cd /tmp/out && cp /bin/true setuid && chmod 6755 setuid && mkfifo fifo && ln -s /etc esc && echo data > file")
	out := filepath.Join(host, "back")
	os.Mkdir(out, 0o755)
	r = e.must("cp", "-u", "root", ":/tmp/out", out)
	if !strings.Contains(r.errOut, "were not copied (first: out/fifo)") {
		t.Errorf("cp out: %s", r)
	}
	if st, err := os.Lstat(filepath.Join(out, "out/setuid")); err != nil || st.Mode() != 0o755 {
		t.Errorf("the setuid file came out as %v (%v), want -rwxr-xr-x", st.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(out, "out/esc")); err != nil || l != "/etc" {
		t.Errorf("the link came out as %q (%v)", l, err)
	}
	if _, err := os.Lstat(filepath.Join(out, "out/fifo")); err == nil {
		t.Error("a fifo came out")
	}
	if b, _ := os.ReadFile(filepath.Join(out, "out/file")); string(b) != "data\n" {
		t.Errorf("file: %q", b)
	}

	// Refusals leave nothing.
	before := entries(t, out)
	if r := e.run("cp", ":/tmp/out", out); r.code != 1 || !strings.Contains(r.errOut, "is a folder already") {
		t.Errorf("cp onto a folder: %s", r)
	}
	if r := e.run("cp", ":/nonexistent", out); r.code != 1 || !strings.Contains(r.errOut, "no such file or folder in the guest") {
		t.Errorf("cp of nothing: %s", r)
	}
	if after := entries(t, out); after != before {
		t.Errorf("refused copies changed the folder: %s, was %s", after, before)
	}
	big := filepath.Join(host, "big")
	os.WriteFile(big, bytes.Repeat([]byte("x"), 2<<20), 0o644)
	e.must("exec", "-u", "root", "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small")
	if r := e.run("cp", "-u", "root", big, ":/mnt/small/"); r.code != 1 || !strings.Contains(r.errOut, "nothing was written; 0 free at /mnt/small") {
		t.Errorf("cp over the guest's free space: %s", r)
	}
	if r := e.must("exec", "-u", "root", "ls -A /mnt/small; umount /mnt/small"); r.out != "" {
		t.Errorf("a full guest disk keeps %q", r.out)
	}

	// A stream to stdout.
	r = e.must("cp", ":/tmp/proj", "-")
	tr := tar.NewReader(strings.NewReader(r.out))
	var names []string
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "proj/a.txt") {
		t.Errorf("cp to -: %v", names)
	}
}

// entries lists what is under dir, for a before and after.
func entries(t *testing.T, dir string) string {
	var names []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		names = append(names, p)
		return nil
	})
	return strings.Join(names, "\n")
}
