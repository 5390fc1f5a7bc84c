package golden

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ctimeOf(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return ctime(&st)
}

// A file's digest is kept while its identity holds, and taken again once
// the file changes, even to the same size.
func TestDigestsCache(t *testing.T) {
	dir := t.TempDir()
	d := Digests{Path: filepath.Join(dir, "digests.json")}
	img := filepath.Join(dir, "image")
	os.WriteFile(img, []byte("version 1"), 0o600)
	if got, err := d.Of(img); err != nil || got != sha([]byte("version 1")) {
		t.Fatalf("Of = %q, %v", got, err)
	}

	// A cache hit does not read the file: a digest planted in the cache
	// for the file's identity is what Of returns.
	var m map[string]digestEntry
	if err := json.Unmarshal(readFile(t, d.Path), &m); err != nil || len(m) != 1 {
		t.Fatalf("cache file: %v, %v", m, err)
	}
	e := m[img]
	planted := sha([]byte("planted"))
	e.SHA256 = planted
	m[img] = e
	b, _ := json.Marshal(m)
	os.WriteFile(d.Path, b, 0o600)
	if got, _ := d.Of(img); got != planted {
		t.Fatalf("Of reread the file: %q", got)
	}

	// A cached digest that is no digest is not believed.
	e.SHA256 = "../x"
	m[img] = e
	b, _ = json.Marshal(m)
	os.WriteFile(d.Path, b, 0o600)
	if got, _ := d.Of(img); got != sha([]byte("version 1")) {
		t.Fatalf("Of returned a cached non-digest: %q", got)
	}

	// Same size, new content: the change time moves (wait for the
	// clock's tick by rewriting until it has).
	before := ctimeOf(t, img)
	for i := 0; ctimeOf(t, img) == before; i++ {
		os.WriteFile(img, []byte(fmt.Sprintf("version %d", 2+i%8)), 0o600)
	}
	want := sha(readFile(t, img))
	if got, err := d.Of(img); err != nil || got != want {
		t.Errorf("Of after a same-size rewrite = %q, %v; want %q", got, err, want)
	}

	// A replaced file (new inode) is hashed again too.
	os.WriteFile(img+".new", []byte("version X"), 0o600)
	os.Rename(img+".new", img)
	if got, _ := d.Of(img); got != sha([]byte("version X")) {
		t.Errorf("Of after a replace = %q", got)
	}
}

// The cache holds at most maxDigests files, dropping the least recently
// used.
func TestDigestsBounded(t *testing.T) {
	dir := t.TempDir()
	d := Digests{Path: filepath.Join(dir, "digests.json")}
	var paths []string
	for i := 0; i < maxDigests+10; i++ {
		p := filepath.Join(dir, fmt.Sprint("f", i))
		os.WriteFile(p, []byte(p), 0o600)
		if got, err := d.Of(p); err != nil || got != sha([]byte(p)) {
			t.Fatalf("Of(%s) = %q, %v", p, got, err)
		}
		paths = append(paths, p)
		if i == maxDigests-1 {
			d.Of(paths[0]) // a hit: paths[0] is now the most recent
		}
	}
	var m map[string]digestEntry
	if err := json.Unmarshal(readFile(t, d.Path), &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != maxDigests {
		t.Fatalf("cache holds %d entries, want %d", len(m), maxDigests)
	}
	if _, ok := m[paths[1]]; ok {
		t.Errorf("the least recently used entry was kept")
	}
	if _, ok := m[paths[0]]; !ok {
		t.Errorf("an entry used again was dropped as if unused since")
	}
	if _, ok := m[paths[len(paths)-1]]; !ok {
		t.Errorf("the newest entry was dropped")
	}
}

// A corrupted cache is ignored and replaced; no cache path, no cache.
func TestDigestsCorrupt(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	os.WriteFile(img, []byte("content"), 0o600)
	for _, junk := range []string{"{\x00", "[1,2,3]", `{"` + img + `":{"SHA256":"../x"}}`, strings.Repeat(" ", 2<<20)} {
		d := Digests{Path: filepath.Join(dir, "digests.json")}
		os.WriteFile(d.Path, []byte(junk), 0o600)
		if got, err := d.Of(img); err != nil || got != sha([]byte("content")) {
			t.Errorf("Of with cache %.20q = %q, %v", junk, got, err)
		}
		var m map[string]digestEntry
		if err := json.Unmarshal(readFile(t, d.Path), &m); err != nil || m[img].SHA256 != sha([]byte("content")) {
			t.Errorf("cache %.20q not rewritten: %v", junk, err)
		}
	}
	if got, err := (Digests{}).Of(img); err != nil || got != sha([]byte("content")) {
		t.Errorf("Of without a cache = %q, %v", got, err)
	}
	if _, err := (Digests{}).Of(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("Of a missing file")
	}
}
