package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpproxy"
)

// Progress hears how far a long step is: done of total bytes (total 0
// when unknown). The CLI draws it; the image package only counts.
type Progress interface {
	Update(done, total int64)
}

type noProgress struct{}

func (noProgress) Update(int64, int64) {}

// Phases hands out a Progress per phase ("download", "verify", "convert");
// nil means none.
type Phases func(phase string) Progress

func (ph Phases) get(phase string) Progress {
	if ph == nil {
		return noProgress{}
	}
	if p := ph(phase); p != nil {
		return p
	}
	return noProgress{}
}

// ChecksumError says a download (or a local image) is not the file it
// should be.
type ChecksumError struct {
	URL, Want, Got string
	// Local is a file given by path, which is left alone.
	Local bool
}

func (e *ChecksumError) Error() string {
	if e.Local {
		return fmt.Sprintf("%s: sha256 is %s, want %s; check that this is the image you meant, or --image-sha256", e.URL, e.Got, e.Want)
	}
	return fmt.Sprintf("%s: sha256 is %s, want %s; the download was deleted. Retry, or check --image-sha256", e.URL, e.Got, e.Want)
}

// Verify checks that the local file at path has the sha256 want.
func Verify(path, want string, p Progress) error {
	want = strings.ToLower(strings.TrimPrefix(want, "sha256:"))
	got, err := FileSHA256(path, p)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	if got != want {
		return &ChecksumError{URL: path, Want: want, Got: got, Local: true}
	}
	return nil
}

// Fetch downloads url into dir unless a verified copy is there already,
// and returns its path. A partial download (name.part) is resumed with an
// HTTP Range request; the file is renamed into place only once its sha256
// matches want (when want is set). The client honours HTTPS_PROXY.
func Fetch(ctx context.Context, client *http.Client, url, want, dir string, ph Phases) (string, error) {
	if client == nil {
		client = &http.Client{Transport: transport()}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	want = strings.ToLower(strings.TrimPrefix(want, "sha256:"))
	name := filepath.Base(url)
	if want != "" {
		name = want[:16] + "-" + name // two images of one name never collide
	}
	final := filepath.Join(dir, name)
	if _, err := os.Stat(final); err == nil {
		return final, nil // only verified files are ever renamed into place
	}
	part := final + ".part"
	if err := download(ctx, client, url, part, ph.get("download")); err != nil {
		return "", err
	}
	got, err := FileSHA256(part, ph.get("verify"))
	if err != nil {
		return "", err
	}
	if want != "" && got != want {
		os.Remove(part)
		return "", &ChecksumError{URL: url, Want: want, Got: got}
	}
	if err := os.Rename(part, final); err != nil {
		return "", err
	}
	return final, nil
}

// transport is http.DefaultTransport's, with the proxy taken from
// HTTPS_PROXY, HTTP_PROXY and NO_PROXY at each request (net/http reads
// them once per process).
func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = func(r *http.Request) (*url.URL, error) {
		return httpproxy.FromEnvironment().ProxyFunc()(r.URL)
	}
	return t
}

// download appends to part what it lacks of url, resuming where it stopped.
func download(ctx context.Context, client *http.Client, url, part string, p Progress) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", url, err)
	}
	defer resp.Body.Close()
	var total int64
	switch resp.StatusCode {
	case http.StatusOK:
		// No range support (or a fresh start): begin again.
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		have, total = 0, resp.ContentLength
	case http.StatusPartialContent:
		start, size, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			return fmt.Errorf("download %s: the server resumed at the wrong place (%q)", url, resp.Header.Get("Content-Range"))
		}
		total = size
	case http.StatusRequestedRangeNotSatisfiable:
		return nil // nothing left to fetch: the checksum decides
	default:
		return fmt.Errorf("download %s: %s", url, resp.Status)
	}
	p.Update(have, total)
	buf := make([]byte, 1<<20)
	done := have
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			p.Update(done, total)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("download %s: %w (run the command again to resume)", url, rerr)
		}
	}
	if total > 0 && done != total {
		return fmt.Errorf("download %s: got %d of %d bytes (run the command again to resume)", url, done, total)
	}
	return f.Sync()
}

// contentRange parses "bytes START-END/SIZE".
func contentRange(h string) (start, size int64, ok bool) {
	h, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, 0, false
	}
	r, total, found := strings.Cut(h, "/")
	if !found {
		return 0, 0, false
	}
	s, _, found := strings.Cut(r, "-")
	if !found {
		return 0, 0, false
	}
	var err1, err2 error
	start, err1 = strconv.ParseInt(s, 10, 64)
	size, err2 = strconv.ParseInt(total, 10, 64)
	if err2 != nil {
		size = 0 // "*": unknown
	}
	return start, size, err1 == nil
}

// FileSHA256 is the hex sha256 of the file at path, reading it with p
// told how far it got (nil: nobody).
func FileSHA256(path string, p Progress) (string, error) {
	if p == nil {
		p = noProgress{}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, &progressReader{r: f, p: p, total: st.Size()}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type progressReader struct {
	r     io.Reader
	p     Progress
	done  int64
	total int64
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.done += int64(n)
	r.p.Update(r.done, r.total)
	return n, err
}
