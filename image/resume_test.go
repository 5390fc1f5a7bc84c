package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// resumeFixture is a 3 MiB image, a .part holding its first MiB in a fresh
// cache, and the sha256 of the whole.
type resumeFixture struct {
	blob []byte
	want string
	dir  string
}

func newResumeFixture(t *testing.T) *resumeFixture {
	f := &resumeFixture{blob: make([]byte, 3<<20), dir: t.TempDir()}
	rand.Read(f.blob)
	sum := sha256.Sum256(f.blob)
	f.want = hex.EncodeToString(sum[:])
	return f
}

// part is where Fetch keeps the partial download (want "" or the digest).
func (f *resumeFixture) part(want string) string {
	name := "cloud.img"
	if want != "" {
		name = want[:16] + "-" + name
	}
	return filepath.Join(f.dir, name+".part")
}

// A server that resumes a range request at another offset than the one
// asked for would splice the wrong bytes into the image; with no digest
// to check (an --image URL without --image-sha256) nothing else would
// notice. The download must stop there and keep what it had.
func TestDownloadRefusesAResumeAtTheWrongOffset(t *testing.T) {
	for _, shift := range []int64{-4096, 4096} {
		for _, verified := range []bool{false, true} {
			t.Run(fmt.Sprintf("shift=%d/verified=%v", shift, verified), func(t *testing.T) {
				f := newResumeFixture(t)
				want := ""
				if verified {
					want = f.want
				}
				have := int64(1 << 20)
				os.WriteFile(f.part(want), f.blob[:have], 0o600)
				var asked atomic.Value
				lying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					asked.Store(r.Header.Get("Range"))
					start := have + shift
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(f.blob)-1, len(f.blob)))
					w.Header().Set("Content-Length", strconv.Itoa(len(f.blob)-int(start)))
					w.WriteHeader(http.StatusPartialContent)
					w.Write(f.blob[start:])
				}))
				defer lying.Close()

				_, err := Fetch(context.Background(), nil, lying.URL+"/cloud.img", want, f.dir, nil)
				if err == nil || !strings.Contains(err.Error(), "resumed at the wrong place") {
					t.Fatalf("Fetch: %v, want the misplaced resume refused", err)
				}
				if got := asked.Load(); got != "bytes=1048576-" {
					t.Fatalf("asked for %q", got)
				}
				if b, _ := os.ReadFile(f.part(want)); !bytes.Equal(b, f.blob[:have]) {
					t.Fatalf("the partial download changed: %d bytes, want its first %d kept as they were", len(b), have)
				}
				if _, err := os.Stat(strings.TrimSuffix(f.part(want), ".part")); !os.IsNotExist(err) {
					t.Fatal("a download resumed at the wrong place was put in the cache")
				}

				// An honest server then finishes it.
				honest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(f.blob))
				}))
				defer honest.Close()
				got, err := Fetch(context.Background(), nil, honest.URL+"/cloud.img", want, f.dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(got); !bytes.Equal(b, f.blob) {
					t.Fatal("the resumed download differs from the image")
				}
			})
		}
	}
}

// A server that ignores Range answers 200 with the whole file: the .part
// starts over, and nothing of it survives past the new end (here a .part
// longer than the image now published under that URL).
func TestDownloadStartsOverWhenTheServerIgnoresRange(t *testing.T) {
	f := newResumeFixture(t)
	stale := bytes.Repeat([]byte("stale "), (4<<20)/6)
	os.WriteFile(f.part(""), stale, 0o600)
	var ranged atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ranged.Store(r.Header.Get("Range") != "")
		w.Write(f.blob)
	}))
	defer srv.Close()
	got, err := Fetch(context.Background(), nil, srv.URL+"/cloud.img", "", f.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ranged.Load() {
		t.Fatal("the download did not try to resume")
	}
	b, _ := os.ReadFile(got)
	if !bytes.Equal(b, f.blob) {
		n := 0
		for n < min(len(b), len(f.blob)) && b[n] == f.blob[n] {
			n++
		}
		t.Fatalf("got %d bytes, the image's first %d, want exactly the %d of the image", len(b), n, len(f.blob))
	}
}

// A resumed answer that ends early, cleanly (its own Content-Length says
// so), leaves an unfinished download, never an image in the cache.
func TestDownloadShortResumeIsNotComplete(t *testing.T) {
	f := newResumeFixture(t)
	os.WriteFile(f.part(""), f.blob[:1<<20], 0o600)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", 1<<20, len(f.blob)-1, len(f.blob)))
		w.Header().Set("Content-Length", strconv.Itoa(1<<20)) // a MiB of the two it claims
		w.WriteHeader(http.StatusPartialContent)
		w.Write(f.blob[1<<20 : 2<<20])
	}))
	defer srv.Close()
	_, err := Fetch(context.Background(), nil, srv.URL+"/cloud.img", "", f.dir, nil)
	if err == nil || !strings.Contains(err.Error(), "run the command again to resume") {
		t.Fatalf("Fetch: %v, want an unfinished download", err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "cloud.img")); !os.IsNotExist(err) {
		t.Fatal("a short download was put in the cache")
	}
	if st, _ := os.Stat(f.part("")); st == nil || st.Size() != 2<<20 {
		t.Fatalf("the .part should hold the 2 MiB received: %v", st)
	}
}

// A verified fetch never takes a cached file it has not verified: an
// earlier unverified download of the same URL (or of another image with
// the same file name) is not the image the digest names.
func TestVerifiedFetchIgnoresAnUnverifiedCopyOfTheSameName(t *testing.T) {
	f := newResumeFixture(t)
	other := bytes.Repeat([]byte("another image "), 1000)
	var serve atomic.Pointer[[]byte]
	serve.Store(&other)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(*serve.Load()))
	}))
	defer srv.Close()
	url := srv.URL + "/cloud.img"
	unverified, err := Fetch(context.Background(), nil, url, "", f.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve.Store(&f.blob)
	got, err := Fetch(context.Background(), nil, url, f.want, f.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got == unverified {
		t.Fatalf("the verified fetch returned the unverified download %s", got)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, f.blob) {
		t.Fatal("the verified fetch returned other bytes than the digest names")
	}
	// And the digest decides even for the cached copy's own name: a file
	// put there by anything else is re-checked by Verify.
	var ce *ChecksumError
	if err := Verify(unverified, f.want, nil); !errors.As(err, &ce) || !ce.Local {
		t.Fatalf("Verify of the other image: %v, want a local ChecksumError", err)
	}
	if err := Verify(got, "sha256:"+strings.ToUpper(f.want), nil); err != nil {
		t.Fatalf("Verify of the image, digest in capitals: %v", err)
	}
}
