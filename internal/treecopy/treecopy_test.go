package treecopy

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// entry is one header of a hand-made stream, as a hostile guest sends it.
type entry struct {
	name, link, body string
	typ              byte
	mode             int64
}

func stream(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		size := int64(len(e.body))
		if e.typ != tar.TypeReg {
			size = 0
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: size, ModTime: time.Unix(1_700_000_000, 0)}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return &b
}

// plenty is a disk with room for anything.
func plenty(string) (int64, int64, error) { return 1 << 50, 1 << 30, nil }

func unpack(t *testing.T, r io.Reader, dst string) (Stats, error) {
	t.Helper()
	return Unpack(r, "top", dst, Options{Free: plenty})
}

// onlyEntry fails unless dir holds exactly the names want.
func onlyEntries(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, want)
	}
}

func TestPackUnpackKeepsTheTree(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	must(os.WriteFile(filepath.Join(src, "a/b/run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(src, "a/plain"), []byte("text"), 0o640))
	must(os.WriteFile(filepath.Join(src, "a/suid"), []byte("x"), 0o644))
	must(os.Chmod(filepath.Join(src, "a/suid"), 0o755|fs.ModeSetuid))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "a/out")))
	must(os.Symlink("plain", filepath.Join(src, "a/in")))
	must(os.MkdirAll(filepath.Join(src, "a/locked"), 0o755))
	must(os.WriteFile(filepath.Join(src, "a/locked/f"), nil, 0o600))
	must(os.Chmod(filepath.Join(src, "a/locked"), 0o500))
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "a/locked"), 0o755) })
	when := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "a/plain"), when, when))

	var b bytes.Buffer
	ps, err := Pack(&b, filepath.Join(src, "a"), "copy", PackOptions{})
	must(err)
	dst := filepath.Join(t.TempDir(), "copy")
	us, err := Unpack(&b, "copy", dst, Options{Free: plenty})
	must(err)
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "locked"), 0o755) })
	if ps.Files != 4 || ps.Dirs != 3 || ps.Links != 2 || us.Files != ps.Files || us.Dirs != ps.Dirs || us.Links != ps.Links || us.Bytes != ps.Bytes {
		t.Errorf("packed %+v, unpacked %+v", ps, us)
	}
	for name, want := range map[string]fs.FileMode{"b/run.sh": 0o755, "plain": 0o640, "suid": 0o755, "locked": fs.ModeDir | 0o500} {
		st, err := os.Lstat(filepath.Join(dst, name))
		if err != nil || st.Mode() != want {
			t.Errorf("%s: %v, mode %v, want %v", name, err, st.Mode(), want)
		}
	}
	if st, _ := os.Stat(filepath.Join(dst, "plain")); !st.ModTime().Equal(when) {
		t.Errorf("plain's time %v, want %v", st.ModTime(), when)
	}
	for link, want := range map[string]string{"out": "/etc/passwd", "in": "plain"} {
		if got, err := os.Readlink(filepath.Join(dst, link)); err != nil || got != want {
			t.Errorf("link %s: %q, %v", link, got, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "b/run.sh")); string(b) != "#!/bin/sh\n" {
		t.Errorf("run.sh holds %q", b)
	}
	onlyEntries(t, filepath.Dir(dst), "copy") // no temporary folder left
}

func TestPackOfALinkAndOfAFile(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o600)
	os.Symlink("f", filepath.Join(src, "l"))
	var b bytes.Buffer
	if _, err := Pack(&b, filepath.Join(src, "l"), "g", PackOptions{}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "g")
	if _, err := Unpack(&b, "g", dst, Options{Free: plenty}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(dst); err != nil || l != "f" {
		t.Fatalf("the link is not copied as a link: %q %v", l, err)
	}
	b.Reset()
	if _, err := Pack(&b, filepath.Join(src, "f"), "g", PackOptions{}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if _, err := Unpack(&b, "", file, Options{Free: plenty}); err != nil { // the top name from the stream
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Errorf("%q", b)
	}
	if _, err := Pack(io.Discard, src, "../x", PackOptions{}); err == nil {
		t.Error("a top name with a slash was taken")
	}
}

// Each stream is one a hostile guest could send: all are refused, and
// nothing is left at the destination, beside it, or outside.
func TestUnpackRefusesHostileStreams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
	}{
		{"dot-dot", []entry{{name: "top/", typ: tar.TypeDir}, {name: "top/../../evil", typ: tar.TypeReg, body: "x"}}},
		{"absolute", []entry{{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}}},
		{"another top", []entry{{name: "top/", typ: tar.TypeDir}, {name: "other", typ: tar.TypeReg, body: "x"}}},
		{"through a link to a folder outside", []entry{
			{name: "top/", typ: tar.TypeDir}, {name: "top/l", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "top/l/evil", typ: tar.TypeReg, body: "x"}}},
		{"onto a link to a file outside", []entry{
			{name: "top/", typ: tar.TypeDir}, {name: "top/l", typ: tar.TypeSymlink, link: "OUTSIDE/victim"}, {name: "top/l", typ: tar.TypeReg, body: "x"}}},
		{"a relative link out", []entry{
			{name: "top/", typ: tar.TypeDir}, {name: "top/l", typ: tar.TypeSymlink, link: "../../../../../../../../OUTSIDE"}, {name: "top/l/evil", typ: tar.TypeReg, body: "x"}}},
		{"a hard link out", []entry{{name: "top/", typ: tar.TypeDir}, {name: "top/h", typ: tar.TypeLink, link: "../OUTSIDE/victim"}}},
		{"a file named twice", []entry{{name: "top", typ: tar.TypeReg, body: "a"}, {name: "top", typ: tar.TypeReg, body: "b"}}},
		{"cut short", nil},
		{"no top", []entry{}},
		{"a first name of dots", []entry{{name: "../x", typ: tar.TypeReg, body: "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outside := t.TempDir()
			os.WriteFile(filepath.Join(outside, "victim"), []byte("safe"), 0o644)
			for i := range tc.entries {
				tc.entries[i].link = strings.ReplaceAll(tc.entries[i].link, "OUTSIDE", outside)
			}
			var r io.Reader = stream(t, tc.entries...)
			if tc.entries == nil { // a header promising 100 bytes, then the end
				b := stream(t, entry{name: "top", typ: tar.TypeReg, body: strings.Repeat("x", 100)})
				r = bytes.NewReader(b.Bytes()[:512+50])
			}
			b, _ := io.ReadAll(r)
			parent := t.TempDir()
			dst := filepath.Join(parent, "top")
			for _, top := range []string{"top", ""} { // named, or taken from the stream
				if _, err := Unpack(bytes.NewReader(b), top, dst, Options{Free: plenty}); err == nil {
					t.Fatalf("the stream was taken (top %q)", top)
				}
			}
			onlyEntries(t, parent)
			onlyEntries(t, outside, "victim")
			if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "safe" {
				t.Errorf("victim now holds %q", b)
			}
		})
	}
}

// No device, fifo, setuid or setgid file comes out of a guest's stream.
func TestUnpackMakesNothingPrivileged(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "top")
	st, err := unpack(t, stream(t, entry{name: "top/", typ: tar.TypeDir, mode: 0o1777},
		entry{name: "top/null", typ: tar.TypeChar}, entry{name: "top/fifo", typ: tar.TypeFifo},
		entry{name: "top/f", typ: tar.TypeReg, body: "x", mode: 0o6755}), dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 2 || st.FirstSkipped != "top/null" {
		t.Errorf("skipped %d, first %q", st.Skipped, st.FirstSkipped)
	}
	onlyEntries(t, dst, "f")
	// The permission bits alone, less the umask, as tar makes them for a
	// user: a guest's 0777 is no one else's to write on a shared host.
	for name, want := range map[string]fs.FileMode{"": fs.ModeDir | 0o777&^umask(), "f": 0o755 &^ umask()} {
		if st, err := os.Lstat(filepath.Join(dst, name)); err != nil || st.Mode() != want {
			t.Errorf("%q: mode %v, want %v (%v)", name, st.Mode(), want, err)
		}
	}
}

// A stream larger than the disk can take stops before the reserve, the
// file's header alone is enough to refuse it, and nothing is left.
func TestUnpackKeepsTheReserveFree(t *testing.T) {
	free := int64(3 << 30)
	o := Options{Reserve: 1 << 30, Free: func(string) (int64, int64, error) { return free, 1 << 20, nil }}
	parent := t.TempDir()
	dst := filepath.Join(parent, "top")
	huge := io.MultiReader(bytes.NewReader(header(t, "top", 4<<30)), neverEnding{})
	_, err := Unpack(huge, "top", dst, o)
	if err == nil || !strings.Contains(err.Error(), "nearly full") {
		t.Fatalf("a 4 GiB file with 3 GiB free: %v", err)
	}
	onlyEntries(t, parent)

	// Inodes run out before the blocks.
	o.Free = func(string) (int64, int64, error) { return 1 << 40, minInodes - 1, nil }
	if _, err := Unpack(stream(t, entry{name: "top", typ: tar.TypeReg}), "top", dst, o); err == nil {
		t.Fatal("no inodes left, and the copy went on")
	}
	onlyEntries(t, parent)
}

func header(t *testing.T, name string, size int64) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes() // no Close: the body follows
}

type neverEnding struct{}

func (neverEnding) Read(p []byte) (int, error) { return len(p), nil }

func TestUnpackOntoWhatIsThere(t *testing.T) {
	parent := t.TempDir()
	dst := filepath.Join(parent, "top")
	os.Mkdir(dst, 0o755)
	os.WriteFile(filepath.Join(dst, "mine"), []byte("keep"), 0o644)
	_, err := unpack(t, stream(t, entry{name: "top/", typ: tar.TypeDir}, entry{name: "top/f", typ: tar.TypeReg, body: "x"}), dst)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("a folder onto a folder: %v", err)
	}
	onlyEntries(t, dst, "mine")
	onlyEntries(t, parent, "top")

	file := filepath.Join(parent, "file")
	os.WriteFile(file, []byte("old"), 0o644)
	if _, err := Unpack(stream(t, entry{name: "file", typ: tar.TypeReg, body: "new"}), "file", file, Options{Free: plenty}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != "new" {
		t.Errorf("a file onto a file: %q", b)
	}
	onlyEntries(t, parent, "file", "top")
}

// A sender that fails after a whole stream (the guest's tar exits with an
// error) leaves nothing at dst.
func TestUnpackAsksBeforeItCommits(t *testing.T) {
	parent := t.TempDir()
	dst := filepath.Join(parent, "top")
	boom := errors.New("tar: exit 2")
	_, err := Unpack(stream(t, entry{name: "top", typ: tar.TypeReg, body: "x"}), "", dst, Options{Free: plenty, Commit: func() error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("commit refused: %v", err)
	}
	onlyEntries(t, parent)
}

// The trailer comes last, beside the top entry, and only after a whole
// stream.
func TestPackEndsWithItsTrailer(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o600)
	var b bytes.Buffer
	if _, err := Pack(&b, src, "top", PackOptions{Trailer: ".end"}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&b)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "top/,top/f,.end" {
		t.Errorf("entries %v", names)
	}
	if _, err := Pack(io.Discard, src, "top", PackOptions{Trailer: "top"}); err == nil {
		t.Error("a trailer named as the top was taken")
	}
	if _, err := Pack(io.Discard, filepath.Join(src, "missing"), "top", PackOptions{Trailer: ".end"}); err == nil {
		t.Error("a missing source packed")
	}
}

// What a stream repeats costs no memory per copy: a folder named again and
// again is one folder; skipped entries are counted, their names not kept;
// and the folder names kept are bounded.
func TestUnpackMemoryIsBounded(t *testing.T) {
	entries := []entry{{name: "top/", typ: tar.TypeDir}}
	for range 1000 {
		entries = append(entries, entry{name: "top/d/", typ: tar.TypeDir, mode: 0o700}, entry{name: "top/fifo", typ: tar.TypeFifo})
	}
	st, err := unpack(t, stream(t, entries...), filepath.Join(t.TempDir(), "top"))
	if err != nil || st.Dirs != 2 || st.Skipped != 1000 {
		t.Fatalf("%+v %v", st, err)
	}

	defer func(n int) { maxDirNames = n }(maxDirNames)
	maxDirNames = 100
	entries = []entry{{name: "top/", typ: tar.TypeDir}}
	for i := range 50 {
		entries = append(entries, entry{name: fmt.Sprintf("top/folder-%d/", i), typ: tar.TypeDir})
	}
	parent := t.TempDir()
	if _, err := unpack(t, stream(t, entries...), filepath.Join(parent, "top")); err == nil || !strings.Contains(err.Error(), "more folders than a copy takes") {
		t.Fatalf("folder names past the bound: %v", err)
	}
	onlyEntries(t, parent)
}

// Folders keep the mode that lets the copy be removed until the copy is
// sure to go in: a refused commit leaves nothing, read-only folders
// included.
func TestFolderModesComeLast(t *testing.T) {
	parent := t.TempDir()
	var atCommit fs.FileMode
	_, err := Unpack(stream(t, entry{name: "top/", typ: tar.TypeDir, mode: 0o555}, entry{name: "top/f", typ: tar.TypeReg, body: "x"}), "", filepath.Join(parent, "top"),
		Options{Free: plenty, Commit: func() error {
			tmp, _ := filepath.Glob(filepath.Join(parent, ".cowork-cp-*", "top"))
			if len(tmp) == 1 {
				st, _ := os.Stat(tmp[0])
				atCommit = st.Mode().Perm()
			}
			return errors.New("refused")
		}})
	if err == nil || atCommit != 0o700 {
		t.Errorf("at commit the folder was %v (%v), want 0700 until it goes in", atCommit, err)
	}
	onlyEntries(t, parent)
}
