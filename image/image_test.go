package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/coworkhq/cowork/hostd/claudecode"
)

func needTool(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s not installed (make test installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func allocated(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// A raw image with data here and there and holes between.
func sparseImage(t *testing.T, dir string, size int64) string {
	p := filepath.Join(dir, "src.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	for _, off := range []int64{0, 3 << 20, 17<<20 + 4096, size - 65536} {
		b := make([]byte, 65536)
		rand.Read(b)
		f.WriteAt(b, off)
	}
	f.Close()
	return p
}

func TestQcow2ToRawMatchesQemuImg(t *testing.T) {
	qemuImg := needTool(t, "qemu-img")
	dir := t.TempDir()
	raw := sparseImage(t, dir, 64<<20)
	for _, compressed := range []bool{false, true} {
		qcow := filepath.Join(dir, "src.qcow2")
		args := []string{"convert", "-O", "qcow2", raw, qcow}
		if compressed {
			args = []string{"convert", "-c", "-O", "qcow2", raw, qcow}
		}
		if out, err := exec.Command(qemuImg, args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		ref := filepath.Join(dir, "ref.raw")
		if out, err := exec.Command(qemuImg, "convert", "-O", "raw", qcow, ref).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		disk := filepath.Join(dir, "disk.raw")
		var last atomic.Int64
		if err := MakeDisk(qcow, disk, 256<<20, progressFunc(func(done, total int64) { last.Store(done) })); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(disk); st.Size() != 256<<20 {
			t.Fatalf("disk size %d, want grown to 256 MiB", st.Size())
		}
		a, _ := os.ReadFile(ref)
		b, _ := os.ReadFile(disk)
		if !bytes.Equal(a, b[:len(a)]) || !bytes.Equal(b[len(a):], make([]byte, len(b)-len(a))) {
			t.Fatalf("compressed=%v: our disk differs from qemu-img's conversion", compressed)
		}
		if used := allocated(t, disk); used > 2<<20 {
			t.Errorf("compressed=%v: the disk takes %d bytes for 256 KiB of data: holes were filled", compressed, used)
		}
		if last.Load() != 64<<20 {
			t.Errorf("progress ended at %d, want the virtual size", last.Load())
		}
	}
	// Raw input is copied sparsely too, and a disk smaller than the image is refused.
	disk := filepath.Join(dir, "disk2.raw")
	if err := MakeDisk(raw, disk, 64<<20, nil); err != nil {
		t.Fatal(err)
	}
	// Raw input is scanned in 1 MiB buffers: four data spots, four MiB.
	if used := allocated(t, disk); used > 6<<20 {
		t.Errorf("raw copy takes %d bytes", used)
	}
	var small *TooSmallError
	if err := MakeDisk(raw, filepath.Join(dir, "small.raw"), 32<<20, nil); !errors.As(err, &small) {
		t.Fatalf("a disk smaller than the image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "small.raw")); !os.IsNotExist(err) {
		t.Fatal("a failed conversion left a disk")
	}
}

type progressFunc func(done, total int64)

func (f progressFunc) Update(done, total int64) { f(done, total) }

func TestDownloadResumesAndVerifies(t *testing.T) {
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	var requests, ranged atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
		}
		if n == 1 {
			// The first try breaks off after 1 MiB.
			w.Header().Set("Content-Length", "3145728")
			w.Write(blob[:1<<20])
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
			}
			return
		}
		http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(blob))
	}))
	defer srv.Close()
	dir := t.TempDir()
	url := srv.URL + "/cloud.img"
	want := hex.EncodeToString(sum[:])
	if _, err := Fetch(context.Background(), nil, url, want, dir, nil); err == nil {
		t.Fatal("the broken first download succeeded")
	}
	part := filepath.Join(dir, want[:16]+"-cloud.img.part")
	if st, err := os.Stat(part); err != nil || st.Size() != 1<<20 {
		t.Fatalf("partial download: %v %v", st, err)
	}
	var phases []string
	got, err := Fetch(context.Background(), nil, url, "sha256:"+want, dir, func(phase string) Progress { phases = append(phases, phase); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if ranged.Load() != 1 {
		t.Fatalf("the second download did not resume with Range (%d ranged of %d)", ranged.Load(), requests.Load())
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, blob) {
		t.Fatal("the resumed download differs")
	}
	if strings.Join(phases, ",") != "download,verify" {
		t.Fatalf("phases %v", phases)
	}
	// A cached, verified image is not fetched again.
	n := requests.Load()
	if again, err := Fetch(context.Background(), nil, url, want, dir, nil); err != nil || again != got || requests.Load() != n {
		t.Fatalf("fetched a cached image again: %v", err)
	}
}

func TestDownloadChecksumMismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "not the image")
	}))
	defer srv.Close()
	dir := t.TempDir()
	want := strings.Repeat("ab", 32)
	_, err := Fetch(context.Background(), nil, srv.URL+"/x.img", want, dir, nil)
	var ce *ChecksumError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("got %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("a bad download was kept: %v", entries)
	}
	if _, err := Fetch(context.Background(), nil, srv.URL+"/missing", "", dir, nil); err == nil {
		t.Fatal("a 404 passed")
	}
}

func testGuest() Guest {
	return Guest{Hostname: "cowork", User: "cowork", UID: 501, ShareTag: "workspace", ProxyURL: "http://192.168.127.1:7890",
		NoProxy: "localhost,127.0.0.1,.cowork.internal,192.168.127.0/24", Packages: DefaultPackages, Provision: DefaultProvision, MAC: "52:54:00:AA:BB:CC"}
}

func TestUserDataIsValidCloudConfig(t *testing.T) {
	ud, err := UserData(testGuest())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
		t.Fatal("no #cloud-config header")
	}
	var cfg struct {
		Users []struct {
			Name string `yaml:"name"`
			UID  int    `yaml:"uid"`
			Sudo string `yaml:"sudo"`
		} `yaml:"users"`
		Mounts   [][]string `yaml:"mounts"`
		Bootcmd  []string   `yaml:"bootcmd"`
		Packages []string   `yaml:"packages"`
		Files    []struct {
			Path    string `yaml:"path"`
			Content string `yaml:"content"`
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(ud, &cfg); err != nil {
		t.Fatalf("not YAML: %v", err)
	}
	if len(cfg.Users) != 1 || cfg.Users[0].UID != 501 || cfg.Users[0].Sudo != "ALL=(ALL) NOPASSWD:ALL" {
		t.Errorf("users %+v", cfg.Users)
	}
	if len(cfg.Mounts) != 1 || cfg.Mounts[0][0] != "workspace" || cfg.Mounts[0][1] != "/workspace" || !strings.Contains(cfg.Mounts[0][3], "nofail") {
		t.Errorf("mounts %v", cfg.Mounts)
	}
	if len(cfg.Bootcmd) != 3 || !strings.Contains(cfg.Bootcmd[0], "systemctl enable "+AgentUnit) || cfg.Bootcmd[1] != identityScript || !strings.Contains(cfg.Bootcmd[2], "console=hvc0") {
		t.Errorf("bootcmd %v", cfg.Bootcmd)
	}
	var proxy bool
	for _, f := range cfg.Files {
		proxy = proxy || (f.Path == "/etc/apt/apt.conf.d/95cowork-proxy" && strings.Contains(f.Content, "192.168.127.1:7890"))
	}
	if !proxy {
		t.Error("no apt proxy setting")
	}
	for _, p := range []string{"ripgrep", "openjdk-11-jdk-headless", "postgresql-client", "fzf"} {
		if !strings.Contains(string(ud), p) {
			t.Errorf("package %s missing", p)
		}
	}
	if _, err := UserData(Guest{Hostname: "x", User: "cowork"}); err == nil {
		t.Error("a guest user without a uid")
	}

	// cloud-init's own schema check, from Debian's cloud-init package.
	ci := os.Getenv("COWORK_CLOUD_INIT")
	if ci == "" {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatal("COWORK_CLOUD_INIT is not set (make test sets it)")
		}
		t.Skip("cloud-init not available; make test provides it")
	}
	p := filepath.Join(t.TempDir(), "user-data")
	os.WriteFile(p, ud, 0o600)
	out, err := exec.Command(ci, "schema", "--config-file", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
		t.Fatalf("cloud-init schema: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("#cloud-config\nusers: 5\nruncmd: {a: b}\n"), 0o600)
	if out, err := exec.Command(ci, "schema", "--config-file", bad).CombinedOutput(); err == nil {
		t.Fatalf("the schema check cannot fail: %s", out)
	}
}

// The Ubuntu guest gets the Claude Code whose flags ask forwards, not
// whatever npm calls latest that day.
func TestDefaultProvisionPinsClaudeCode(t *testing.T) {
	want := "npm install -g @anthropic-ai/claude-code@" + claudecode.Version
	for _, c := range DefaultProvision {
		if strings.Contains(c, "@anthropic-ai/claude-code") {
			if c != want {
				t.Fatalf("provision runs %q, want %q", c, want)
			}
			return
		}
	}
	t.Fatalf("no Claude Code install in %q", DefaultProvision)
}
