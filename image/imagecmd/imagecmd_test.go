package imagecmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/hostdwire"
)

// run runs one command and splits its stdout into lines.
func run(t *testing.T, name string, args ...string) ([]hostdwire.Line, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), name, args, &out)
	var lines []hostdwire.Line
	for _, b := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		if len(b) == 0 {
			continue
		}
		var l hostdwire.Line
		if jerr := json.Unmarshal(b, &l); jerr != nil {
			t.Fatalf("%s printed %q, not a line of JSON: %v", name, b, jerr)
		}
		lines = append(lines, l)
	}
	return lines, err
}

// rawImage writes n bytes of a raw image and returns its path and digest.
func rawImage(t *testing.T, dir string, n int) (string, string) {
	b := bytes.Repeat([]byte("cowork"), n/6+1)[:n]
	p := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// The last line names the result; the progress before it reaches the
// total, so a bar the CLI draws ends full.
func TestVerifyAndDisk(t *testing.T) {
	dir := t.TempDir()
	img, sum := rawImage(t, dir, 1<<20)

	lines, err := run(t, "verify", "--file", img, "--sha256", sum)
	if err != nil || len(lines) < 2 || lines[len(lines)-1].Path != img {
		t.Fatalf("verify: %+v %v", lines, err)
	}
	if p := lines[len(lines)-2]; p.Phase != "verify" || p.Done != 1<<20 || p.Total != 1<<20 {
		t.Errorf("verify's last progress: %+v", p)
	}
	if _, err := run(t, "verify", "--file", img, "--sha256", strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "sha256 is "+sum) {
		t.Errorf("a wrong digest: %v", err)
	}

	disk := filepath.Join(dir, "disk.raw")
	lines, err = run(t, "disk", "--from", img, "--to", disk, "--size", "4194304")
	if err != nil || lines[len(lines)-1].Path != disk {
		t.Fatalf("disk: %+v %v", lines, err)
	}
	if st, err := os.Stat(disk); err != nil || st.Size() != 4<<20 {
		t.Fatalf("the disk: %v %v", st, err)
	}
	small := filepath.Join(dir, "small.raw")
	if _, err := run(t, "disk", "--from", img, "--to", small, "--size", "4096"); err == nil || !strings.Contains(err.Error(), "give a larger --disk") {
		t.Errorf("a disk smaller than the image: %v", err)
	}
	if _, err := os.Stat(small); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed disk left a file: %v", err)
	}
}

// fetch downloads into the folder, checks the digest, and says where
// the file is; a wrong digest leaves no file the next fetch would trust.
func TestFetch(t *testing.T) {
	dir := t.TempDir()
	img, sum := rawImage(t, dir, 300<<10)
	body, _ := os.ReadFile(img)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	cache := filepath.Join(dir, "cache")

	lines, err := run(t, "fetch", "--url", srv.URL+"/img.raw", "--sha256", sum, "--dir", cache)
	if err != nil || len(lines) == 0 {
		t.Fatalf("fetch: %+v %v", lines, err)
	}
	got := lines[len(lines)-1].Path
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, body) || filepath.Dir(got) != cache {
		t.Fatalf("fetched %q: %v", got, err)
	}
	if _, err := run(t, "fetch", "--url", srv.URL+"/other.raw", "--sha256", strings.Repeat("0", 64), "--dir", cache); err == nil || !strings.Contains(err.Error(), sum) {
		t.Errorf("a wrong digest: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range [][]string{{"disk"}, {"disk", "--from", "a", "--to", "b"}, {"verify", "--file", "x"}, {"fetch", "--url", "u"}, {"fetch", "--bogus"}, {"verify", "stray"}, {"nope"}} {
		_, err := run(t, c[0], c[1:]...)
		if !errors.As(err, new(*UsageError)) {
			t.Errorf("%q: %v, want a usage error", c, err)
		}
	}
}
