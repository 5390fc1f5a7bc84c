package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The downloader goes through HTTP_PROXY and HTTPS_PROXY. The image's host
// is a name that does not resolve: only a proxy can serve it (proxies are
// skipped for loopback targets, so the test server's own address would
// not do).
func TestDownloadHonoursProxyEnvironment(t *testing.T) {
	blob := []byte("an image through the proxy")
	sum := sha256.Sum256(blob)
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.RequestURI)
		mu.Unlock()
		if r.Method == http.MethodConnect {
			http.Error(w, "no tunnels here", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(blob))
	}))
	defer proxy.Close()
	for _, k := range []string{"NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "REQUEST_METHOD"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("HTTPS_PROXY", proxy.URL)

	got, err := Fetch(context.Background(), nil, "http://images.cowork.invalid/x.img", hex.EncodeToString(sum[:]), t.TempDir(), nil)
	if err != nil {
		t.Fatalf("through HTTP_PROXY: %v", err)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, blob) {
		t.Errorf("the proxied download differs: %q", b)
	}
	// HTTPS goes through a CONNECT tunnel, which this proxy refuses.
	_, err = Fetch(context.Background(), nil, "https://images.cowork.invalid/y.img", "", t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("through HTTPS_PROXY: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"GET http://images.cowork.invalid/x.img", "CONNECT images.cowork.invalid:443"}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("the proxy saw %q, want %q", seen, want)
	}
}
