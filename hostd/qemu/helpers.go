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

// firmwareCode finds the EFI firmware for the guest architecture.
func firmwareCode(arch string) (string, error) {
	for _, p := range firmware[arch] {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	pkg := map[string]string{"arm64": "qemu-efi-aarch64", "amd64": "ovmf"}[arch]
	return "", fmt.Errorf("no EFI firmware for %s guests (looked for %s); install it (Debian: apt install %s)", arch, strings.Join(firmware[arch], ", "), pkg)
}

// ensureVars creates the EFI variable store on first boot from the
// firmware's empty template (its CODE file's VARS twin); later boots keep
// what the guest stored in it.
func ensureVars(code, vars string) error {
	if _, err := os.Stat(vars); err == nil {
		return nil
	}
	tmpl := strings.Replace(code, "CODE", "VARS", 1)
	if tmpl == code {
		tmpl = strings.Replace(code, "code", "vars", 1)
	}
	b, err := os.ReadFile(tmpl)
	if err != nil {
		return fmt.Errorf("EFI variable template for %s: %w", code, err)
	}
	return os.WriteFile(vars, b, 0o600)
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

// waitForPath waits until path exists, or the process exits first.
func waitForPath(ctx context.Context, path string, exited <-chan error) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before creating %s (%v)", filepath.Base(path), err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
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
