package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func (r runPaths) file(name string) string { return filepath.Join(r.dir, name) }

// findFirmware picks the first of candidates whose code image exists and
// whose variable template, when it names one, exists too.
func findFirmware(arch string, candidates []efiFirmware) (efiFirmware, error) {
	var looked []string
	for _, f := range candidates {
		looked = append(looked, f.code)
		if _, err := os.Stat(f.code); err != nil {
			continue
		}
		if f.vars != "" {
			if _, err := os.Stat(f.vars); err != nil {
				continue
			}
		}
		return f, nil
	}
	pkg := map[string]string{"arm64": "qemu-efi-aarch64", "amd64": "ovmf"}[arch]
	return efiFirmware{}, fmt.Errorf("no EFI firmware for %s guests (looked for %s); install it (Debian: apt install %s)", arch, strings.Join(looked, ", "), pkg)
}

// armFlashSize is what QEMU's aarch64 virt machine wants of each pflash
// device: exactly 64 MiB.
const armFlashSize = 64 << 20

// prepareFirmware returns the code image to map, and creates the EFI
// variable store on first boot from the firmware's empty template; later
// boots keep what the guest stored in it. On arm64 a code image smaller
// than the flash is padded into a copy in runDir, and a firmware without
// a template gets a blank store, which EDK2 formats at its first boot.
func prepareFirmware(arch string, f efiFirmware, vars, runDir string) (string, error) {
	code := f.code
	if arch == "arm64" {
		st, err := os.Stat(code)
		if err != nil {
			return "", err
		}
		if st.Size() < armFlashSize {
			padded := filepath.Join(runDir, "efi-code.fd")
			if err := padCopy(code, padded, armFlashSize); err != nil {
				return "", fmt.Errorf("pad the EFI firmware %s: %w", code, err)
			}
			code = padded
		}
	}
	if _, err := os.Stat(vars); err == nil {
		return code, nil
	}
	if f.vars == "" {
		if arch != "arm64" {
			return "", fmt.Errorf("no EFI variable template for %s", f.code)
		}
		return code, padCopy("", vars, armFlashSize)
	}
	if err := padCopy(f.vars, vars, 0); err != nil {
		return "", fmt.Errorf("EFI variable template %s: %w", f.vars, err)
	}
	return code, nil
}

// padCopy writes src (nothing when "") to dst through dst.tmp, then grows
// it with a hole to size bytes when it is shorter.
func padCopy(src, dst string, size int64) error {
	var b []byte
	if src != "" {
		var err error
		if b, err = os.ReadFile(src); err != nil {
			return err
		}
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	defer os.Remove(tmp)
	if int64(len(b)) < size {
		if err := os.Truncate(tmp, size); err != nil {
			return err
		}
	}
	return os.Rename(tmp, dst)
}

// waitForSocket waits until a process listens on path, or exits trying.
func waitForSocket(ctx context.Context, path string, exited <-chan error) error {
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before listening on %s (%v)", filepath.Base(path), err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitForLog waits until the log at path holds want, or the process exits
// first. A log that stays silent for wait is taken as ready: the words are
// the file server's, and another version may say something else.
func waitForLog(ctx context.Context, path, want string, wait time.Duration, exited <-chan error) error {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(want)) {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before serving (%v)", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// tail returns the last n non-empty lines of a file, joined by " | ".
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			lines = append(lines, s)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

var errClosed = errors.New("the agent channel is closed")
