package qemu

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeProbe points the KVM probe at files in a temporary directory: a
// cache, a KVM device (absent until created), and a QEMU that notes each
// run and exits with code.
type fakeProbe struct {
	dir, qemu, device string
	p                 accelProbe
}

func newFakeProbe(t *testing.T, code string) *fakeProbe {
	t.Helper()
	if a := hostArch(); a != "amd64" && a != "arm64" {
		t.Skipf("no KVM probe for %s", a)
	}
	dir := t.TempDir()
	f := &fakeProbe{dir: dir, qemu: filepath.Join(dir, "qemu-system"), device: filepath.Join(dir, "kvm")}
	script := "#!/bin/sh\necho run >> \"$0.runs\"\nexit " + code + "\n"
	if err := os.WriteFile(f.qemu, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	f.p = newAccelProbe(filepath.Join(dir, "cache"))
	f.p.device = f.device
	return f
}

// passing is the exit code of a probe guest that ran under KVM.
func passing() string {
	if hostArch() == "amd64" {
		return "3"
	}
	return "0"
}

func (f *fakeProbe) runs() int {
	b, _ := os.ReadFile(f.qemu + ".runs")
	return strings.Count(string(b), "run")
}

func (f *fakeProbe) accelerator() string {
	// A new probe each time, as each start makes: what one start learned
	// reaches the next only through the cache file.
	p := newAccelProbe(filepath.Dir(f.p.cache))
	p.device = f.device
	return p.accelerator(f.qemu, hostArch(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestAccelCacheKeepsEachKey(t *testing.T) {
	p := newFakeProbe(t, "0").p
	if _, ok := p.read("a"); ok {
		t.Fatal("a hit in a cache that does not exist")
	}
	p.write("a", "kvm")
	p.write("b", "tcg")
	for key, want := range map[string]string{"a": "kvm", "b": "tcg"} {
		if got, ok := p.read(key); !ok || got != want {
			t.Errorf("%s: %q %v, want %q", key, got, ok, want)
		}
	}
	if _, ok := p.read("c"); ok {
		t.Error("a hit for a key never written")
	}

	os.WriteFile(p.cache, []byte(`{"a": "fast"}`), 0o600)
	if _, ok := p.read("a"); ok {
		t.Error("an answer that is neither kvm nor tcg was taken")
	}
	os.WriteFile(p.cache, []byte("not json"), 0o600)
	if _, ok := p.read("a"); ok {
		t.Error("a hit in a corrupt cache")
	}
	p.write("a", "kvm") // a corrupt cache is replaced
	if got, ok := p.read("a"); !ok || got != "kvm" {
		t.Errorf("after rewriting a corrupt cache: %q %v", got, ok)
	}

	p = newAccelProbe("") // no cache directory
	p.write("d", "kvm")
	if _, ok := p.read("d"); ok {
		t.Error("a hit with caching off")
	}
}

func TestProbeKeyFollowsTheBinaryAndArch(t *testing.T) {
	f := newFakeProbe(t, "0")
	k := probeKey(f.qemu, "arm64")
	if probeKey(f.qemu, "arm64") != k {
		t.Fatal("the same binary and arch give two keys")
	}
	if probeKey(f.qemu, "amd64") == k {
		t.Error("another arch, the same key")
	}
	os.WriteFile(f.qemu, []byte("#!/bin/sh\n# an upgraded QEMU\nexit 0\n"), 0o700)
	if probeKey(f.qemu, "arm64") == k {
		t.Error("another binary, the same key")
	}
}

// A /dev/kvm that cannot be opened (no module yet, not in the kvm group)
// can change without the key changing, so that "tcg" is not kept: once
// the device opens, the next start probes again.
func TestAcceleratorRetriesAfterKVMCouldNotBeOpened(t *testing.T) {
	f := newFakeProbe(t, passing())
	if got := f.accelerator(); got != "tcg" {
		t.Fatalf("without a KVM device: %q", got)
	}
	if _, ok := f.p.read(probeKey(f.qemu, hostArch())); ok {
		t.Fatal("an unopenable KVM device's tcg was cached")
	}
	if f.runs() != 0 {
		t.Fatal("QEMU was run without a KVM device")
	}

	os.WriteFile(f.device, nil, 0o600) // the user joined the kvm group
	if got := f.accelerator(); got != "kvm" {
		t.Fatalf("once the device opens: %q, want kvm", got)
	}
	if got, ok := f.p.read(probeKey(f.qemu, hostArch())); !ok || got != "kvm" {
		t.Fatalf("a probe that ran was not cached: %q %v", got, ok)
	}

	if got := f.accelerator(); got != "kvm" || f.runs() != 1 {
		t.Fatalf("a new process: %q after %d probes, want kvm from the cache after 1", got, f.runs())
	}
}

// A test guest that ran and failed is a real answer: it is kept.
func TestAcceleratorCachesAFailedProbe(t *testing.T) {
	f := newFakeProbe(t, "1")
	os.WriteFile(f.device, nil, 0o600)
	if got := f.accelerator(); got != "tcg" {
		t.Fatalf("a failing test guest: %q", got)
	}
	if got, ok := f.p.read(probeKey(f.qemu, hostArch())); !ok || got != "tcg" {
		t.Fatalf("a probe that ran and failed was not cached: %q %v", got, ok)
	}
	if got := f.accelerator(); got != "tcg" || f.runs() != 1 {
		t.Fatalf("%q after %d probes, want tcg from the cache after 1", got, f.runs())
	}
}
