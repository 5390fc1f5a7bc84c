package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// kvmDevice is the KVM device the probe opens.
const kvmDevice = "/dev/kvm"

// accelCacheName is the probe's answers in the backend's cache directory
// (machine.Config.CacheDir).
const accelCacheName = "accel.json"

// accelProbe decides between KVM and TCG. Its answers are kept in the file
// cache between runs (empty: probe at every start); device is the KVM
// device, which tests point elsewhere. It is a value made for each start,
// not package state, so a process holds no answer the cache file does not.
type accelProbe struct {
	cache, device string
}

// newAccelProbe is the probe for a VM whose backend keeps its cache in
// cacheDir (machine.Config.CacheDir; empty keeps nothing).
func newAccelProbe(cacheDir string) accelProbe {
	p := accelProbe{device: kvmDevice}
	if cacheDir != "" {
		p.cache = filepath.Join(cacheDir, accelCacheName)
	}
	return p
}

// probeResult is what probeKVM found. Ran says a test guest was really
// run: only then is the answer worth keeping, since the others can change
// without the key changing (a user added to the kvm group, a module
// loaded, a full temporary directory).
type probeResult struct {
	accel, why string
	ran        bool
}

// accelerator is "kvm" when the KVM device really runs a guest of arch
// here, and "tcg" otherwise. A /dev/kvm that opens proves nothing (nested
// setups can refuse real guests), so a tiny guest is run once and the
// answer cached, keyed by the QEMU binary and the host kernel.
func (p accelProbe) accelerator(qemuBin, arch string, log *slog.Logger) string {
	key := probeKey(qemuBin, arch)
	if accel, ok := p.read(key); ok {
		return accel
	}
	r := p.probeKVM(qemuBin, arch)
	if r.accel == "tcg" {
		log.Warn("no usable KVM: the guest runs under emulation (TCG) and will be slow", "why", r.why)
	}
	if r.ran {
		p.write(key, r.accel)
	}
	return r.accel
}

func probeKey(qemuBin, arch string) string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	st, _ := os.Stat(qemuBin)
	var size, mtime int64
	if st != nil {
		size, mtime = st.Size(), st.ModTime().Unix()
	}
	return fmt.Sprintf("%s|%d|%d|%s|%s", qemuBin, size, mtime, unix.ByteSliceToString(u.Release[:]), arch)
}

func (p accelProbe) read(key string) (string, bool) {
	v, ok := jsonCache(p.cache).get(key)
	return v, ok && (v == "kvm" || v == "tcg")
}

func (p accelProbe) write(key, accel string) { jsonCache(p.cache).set(key, accel) }

// jsonCache is a small map kept as JSON in a file of the backend's cache
// directory: what hostd learned about this host's QEMU, keyed by what
// would change it. "" keeps nothing. A file that cannot be read is an
// empty cache: the answer is found again.
type jsonCache string

func (c jsonCache) get(key string) (string, bool) {
	if c == "" {
		return "", false
	}
	b, err := os.ReadFile(string(c))
	if err != nil {
		return "", false
	}
	var m map[string]string
	if json.Unmarshal(b, &m) != nil {
		return "", false
	}
	v, ok := m[key]
	return v, ok
}

func (c jsonCache) set(key, value string) {
	if c == "" {
		return
	}
	m := map[string]string{}
	if b, err := os.ReadFile(string(c)); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	m[key] = value
	b, _ := json.MarshalIndent(m, "", "  ")
	_ = os.MkdirAll(filepath.Dir(string(c)), 0o700)
	_ = os.WriteFile(string(c), b, 0o600)
}

// hostArch is the GOARCH naming of the host's CPU, as a guest would need it.
func hostArch() string { return runtime.GOARCH }

// probeKVM runs a guest of a few instructions under KVM: it ends QEMU
// through a device only a running guest can reach. It returns "tcg" and
// the reason when that does not happen.
func (p accelProbe) probeKVM(qemuBin, arch string) probeResult {
	notRun := func(why string) probeResult { return probeResult{accel: "tcg", why: why} }
	if arch != hostArch() {
		return notRun(fmt.Sprintf("%s guest on %s host", arch, hostArch()))
	}
	f, err := os.OpenFile(p.device, os.O_RDWR, 0)
	if err != nil {
		return notRun(err.Error())
	}
	f.Close()
	dir, err := os.MkdirTemp("", "cowork-kvm-probe")
	if err != nil {
		return notRun(err.Error())
	}
	defer os.RemoveAll(dir)
	payload := filepath.Join(dir, "probe.bin")
	var args []string
	var wantExit int
	switch arch {
	case "amd64":
		// A BIOS whose reset vector writes 1 to isa-debug-exit: QEMU exits 3.
		bios := make([]byte, 64<<10)
		copy(bios[0xfff0:], []byte{0xb0, 0x01, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe}) // mov al,1; out 0xf4,al; hlt; jmp $
		if err := os.WriteFile(payload, bios, 0o600); err != nil {
			return notRun(err.Error())
		}
		args = []string{"-M", "q35", "-bios", payload, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"}
		wantExit = 3
	case "arm64":
		// A kernel that calls PSCI SYSTEM_OFF through HVC: QEMU exits 0.
		code := []byte{
			0x00, 0x01, 0x80, 0x52, // movz w0, #0x8
			0x00, 0x80, 0xb0, 0x72, // movk w0, #0x8400, lsl #16
			0x02, 0x00, 0x00, 0xd4, // hvc #0
			0x00, 0x00, 0x00, 0x14, // b .
		}
		if err := os.WriteFile(payload, code, 0o600); err != nil {
			return notRun(err.Error())
		}
		args = []string{"-M", "virt", "-cpu", "host", "-kernel", payload}
		wantExit = 0
	default:
		return notRun("unknown architecture " + arch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin, append([]string{"-accel", "kvm", "-nodefaults", "-nographic", "-display", "none", "-m", "64M"}, args...)...)
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		return notRun(fmt.Sprintf("run %s: %v", qemuBin, err)) // QEMU itself did not start
	}
	code := cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return probeResult{accel: "tcg", why: "a KVM test guest did not run", ran: true}
	}
	if code != wantExit {
		return probeResult{accel: "tcg", why: fmt.Sprintf("a KVM test guest failed (exit %d, %v): %s", code, err, firstLine(out)), ran: true}
	}
	return probeResult{accel: "kvm", ran: true}
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
