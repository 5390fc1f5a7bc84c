package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/units"
)

// goldenHome is a fresh, empty COWORK_HOME.
func goldenHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	return home
}

var hexKey = regexp.MustCompile(`^[0-9a-f]{64}$`)

// The store's command lines: an empty listing is a JSON list, mistakes
// are usage errors (exit 2), a failure exit 1 with a message.
func TestGoldenCommandLines(t *testing.T) {
	goldenHome(t)
	if code, out, errOut := runMain("golden", "ls"); code != 0 || out != "[]\n" {
		t.Errorf("ls of an empty store: exit %d, %q, %q", code, out, errOut)
	}
	if code, out, errOut := runMain("golden", "rm", "abcd1234"); code != 1 || out != "" || !strings.Contains(errOut, `no golden disk "abcd1234"`) {
		t.Errorf("rm of an unknown key: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut := runMain("golden", "rm", "../x"); code != 1 || !strings.Contains(errOut, "hex digits") {
		t.Errorf("rm of a path: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{
		{"golden"}, {"golden", "rm"}, {"golden", "frobnicate"}, {"golden", "ls", "--bogus"},
		{"golden", "key", "--image", "x"}, {"golden", "key", "--config", "{}"},
		{"golden", "clone", "--key", "abcd", "--dir", "/x", "--size", "1"},
		{"golden", "clone", "--key", strings.Repeat("a", 64), "--dir", "/x", "--size", "0"},
		{"golden", "capture", "--name", "../x"},
	} {
		if code, out, errOut := runMain(args...); code != hostdwire.ExitUsage || out != "" || errOut == "" {
			t.Errorf("%q: exit %d, %q, %q; want exit 2 and a message", args, code, out, errOut)
		}
	}
	if _, _, errOut := runMain("golden", "frobnicate"); !strings.Contains(errOut, "want key, clone, capture, ls, rm or prune") {
		t.Errorf("an unknown op does not list the ops: %q", errOut)
	}
}

// key names the golden disk of a config and an image; it does not
// depend on the instance's name.
func TestGoldenKey(t *testing.T) {
	goldenHome(t)
	img := filepath.Join(t.TempDir(), "image.raw")
	os.WriteFile(img, []byte("a small image"), 0o600)
	key := func(name string) hostdwire.GoldenKey {
		t.Helper()
		cfg, _ := json.Marshal(instance.Config{Name: name, Arch: "arm64", Boot: instance.BootEFI, GuestUID: 1000})
		code, out, errOut := runMain("golden", "key", "--config", string(cfg), "--image", img)
		var got hostdwire.GoldenKey
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil || !hexKey.MatchString(got.Key) {
			t.Fatalf("key: exit %d, %q, %q", code, out, errOut)
		}
		return got
	}
	a := key("a")
	if a.Found || a.Size != 0 {
		t.Errorf("key in an empty store: %+v", a)
	}
	if b := key("b"); b.Key != a.Key {
		t.Errorf("the key depends on the instance's name")
	}
	if code, _, errOut := runMain("golden", "key", "--config", `{"arch":"arm64"}`, "--image", img+".missing"); code != 1 || !strings.Contains(errOut, "image.raw.missing") {
		t.Errorf("key of a missing image: exit %d, %q", code, errOut)
	}
}

// A stopped instance's disk captured, listed, cloned; rm refuses while
// an instance depends on it, then removes it.
func TestGoldenCaptureCloneRemove(t *testing.T) {
	home := goldenHome(t)
	img := filepath.Join(t.TempDir(), "image.raw")
	os.WriteFile(img, []byte("a small image"), 0o600)
	const size = 1 << 20
	cfg := instance.Config{Name: "src", Arch: "arm64", Boot: instance.BootEFI, Image: img, Disk: units.Size(size), GuestUID: 1000}
	p := instance.Paths(filepath.Join(home, "src"))
	os.MkdirAll(p.Dir(), 0o700)
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p.Disk(), []byte("provisioned"), 0o600)
	os.Truncate(p.Disk(), size)

	// A running instance's disk is the VM's: capture refuses it, saying
	// how to go on, and moves nothing.
	lock, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runMain("golden", "capture", "--name", "src"); code != 1 || out != "" || !strings.Contains(errOut, "is running; stop it first") {
		t.Errorf("capture of a running instance: exit %d, %q, %q", code, out, errOut)
	}
	lock.Release()
	if st, err := os.Stat(p.Disk()); err != nil || st.Size() != size {
		t.Fatalf("the refused capture touched the disk: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(home, instance.CacheDir, "golden")); len(entries) > 1 { // the store's lock file at most
		t.Errorf("the refused capture left %d entries in the store", len(entries))
	}

	code, out, errOut := runMain("golden", "capture", "--name", "src")
	var res hostdwire.GoldenResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !hexKey.MatchString(res.Key) || res.Existed {
		t.Fatalf("capture: exit %d, %q, %q", code, out, errOut)
	}
	cfgJSON, _ := json.Marshal(cfg)
	code, out, _ = runMain("golden", "key", "--config", string(cfgJSON), "--image", img)
	var k hostdwire.GoldenKey
	if code != 0 || json.Unmarshal([]byte(out), &k) != nil || k.Key != res.Key || !k.Found || k.Size != size {
		t.Errorf("key after capture: %q, want found %s of %d bytes", out, res.Key[:12], size)
	}
	if code, out, _ := runMain("golden", "capture", "--name", "nobody"); code != 1 || out != "" {
		t.Errorf("capture of no instance: exit %d", code)
	}

	dst := filepath.Join(home, "dst")
	os.MkdirAll(dst, 0o700)
	code, out, errOut = runMain("golden", "clone", "--key", res.Key, "--dir", dst, "--size", "2097152")
	var cl hostdwire.GoldenResult
	if code != 0 || json.Unmarshal([]byte(out), &cl) != nil || cl.Key != res.Key || (cl.Format != "raw" && cl.Format != "qcow2") {
		t.Fatalf("clone: exit %d, %q, %q", code, out, errOut)
	}

	code, out, _ = runMain("golden", "ls")
	var ls []hostdwire.GoldenDisk
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil || len(ls) != 1 || ls[0].Key != res.Key || ls[0].From != "src" ||
		ls[0].Image != "image.raw" || ls[0].Size != size || ls[0].Allocated <= 0 || ls[0].Users == nil {
		t.Fatalf("ls: exit %d, %q", code, out)
	}
	if res.Format == instance.DiskQcow2 { // no reflinks here: both instances are overlays
		if strings.Join(ls[0].Users, ",") != "dst,src" {
			t.Errorf("ls users %v, want dst,src", ls[0].Users)
		}
		code, out, errOut = runMain("golden", "rm", res.Key[:8])
		if code != 1 || out != "" || !strings.Contains(errOut, "dst, src") {
			t.Errorf("rm of a golden disk in use: exit %d, %q, %q", code, out, errOut)
		}
		code, out, _ = runMain("golden", "prune")
		if code != 0 || out != "" {
			t.Errorf("prune of a golden disk in use: exit %d, %q", code, out)
		}
		os.RemoveAll(dst)
		os.RemoveAll(p.Dir())
	}
	code, out, errOut = runMain("golden", "rm", res.Key[:8])
	var rm hostdwire.GoldenDisk
	if code != 0 || json.Unmarshal([]byte(out), &rm) != nil || rm.Key != res.Key {
		t.Errorf("rm: exit %d, %q, %q", code, out, errOut)
	}
	if code, out, _ := runMain("golden", "ls"); code != 0 || out != "[]\n" {
		t.Errorf("ls after rm: %q", out)
	}
}
