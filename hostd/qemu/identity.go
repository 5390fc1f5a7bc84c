package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
)

// versionTimeout bounds `qemu -version`.
const versionTimeout = 10 * time.Second

// Identity is what a guest saved by this VM depends on (machine.Saver):
// the QEMU binary and its version, the EFI firmware it runs, and a digest
// of QEMU's arguments, which change with the CPU count, the memory, the
// accelerator and every device but the disk's file and format (the
// manifest checks those apart) and the paths of the instance's own
// files. They are the arguments of a boot, the
// share attached: the same for the VM that saves and the one that
// resumes, whose launch differs only in what it adds to load the guest.
func (v *VM) Identity(ctx context.Context) (machine.Identity, error) {
	bin, err := exec.LookPath(binary(v.cfg.Arch))
	if err != nil {
		return machine.Identity{}, fmt.Errorf("%s not found: %w", binary(v.cfg.Arch), err)
	}
	id := machine.Identity{Binary: bin}
	if id.Version, err = v.versionOf(ctx, bin); err != nil {
		return id, err
	}
	accel := v.accel
	if accel == "" { // not launched: what a launch would pick, known to the probe's cache
		accel = newAccelProbe(v.cfg.CacheDir).accelerator(bin, v.cfg.Arch, v.log)
	}
	l := launch{accel: accel}
	if v.cfg.Kernel == "" {
		fw, err := findFirmware(v.cfg.Arch, firmware[v.cfg.Arch])
		if err != nil {
			return id, err
		}
		id.Firmware, l.firmwareCode = fw.code, fw.code
	}
	// The disk's file and format are left out: the manifest records them
	// apart, and a resume may find the same content under another name
	// (a snapshot's layer, under an empty overlay).
	c := v.cfg
	c.Disk, c.DiskFormat = "DISK", "FORMAT"
	// So are the instance's own files, which sit in its folder: a clone
	// of a snapshot with memory resumes it from its own folder, with
	// copies of the same kernel files (the guest reads none of them once
	// it runs; the EFI variables and cidata are read at boot).
	for _, p := range []*string{&c.Kernel, &c.Initrd, &c.EFIVars, &c.CIData, &c.RunDir} {
		if *p != "" {
			*p = "INSTANCE/" + filepath.Base(*p)
		}
	}
	sum := sha256.Sum256([]byte(strings.Join(args(&c, l), "\x00")))
	id.Devices = hex.EncodeToString(sum[:])
	return id, nil
}

// versionCacheName keeps what -version said of each QEMU binary, keyed as
// the accelerator's probe is: running it costs a resume 60 ms.
const versionCacheName = "qemu-version.json"

// versionOf is bin's version, from the cache when this binary (its path,
// size and time) said it before.
func (v *VM) versionOf(ctx context.Context, bin string) (string, error) {
	var cache jsonCache
	if v.cfg.CacheDir != "" {
		cache = jsonCache(filepath.Join(v.cfg.CacheDir, versionCacheName))
	}
	key := probeKey(bin, "")
	if version, ok := cache.get(key); ok {
		return version, nil
	}
	version, err := qemuVersionOf(ctx, bin)
	if err == nil {
		cache.set(key, version)
	}
	return version, err
}

// qemuVersionOf is what bin -version says it is ("7.2.22 (Debian
// 1:7.2+dfsg-7+deb12u18)"), its first line's words after "version".
func qemuVersionOf(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-version").Output()
	if err != nil {
		return "", fmt.Errorf("%s -version: %w", bin, err)
	}
	return parseVersion(string(out))
}

func parseVersion(out string) (string, error) {
	first, _, _ := strings.Cut(out, "\n")
	_, v, ok := strings.Cut(first, "version ")
	v = strings.TrimSpace(v)
	if !ok || v == "" || len(v) > 200 {
		return "", fmt.Errorf("QEMU's -version says %q, not a version", first)
	}
	return v, nil
}
