package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A folder whose name holds a comma or a backslash reaches the C
// virtiofsd as one value: "x,source=/etc" must not serve /etc.
func TestVirtiofsdArgsEscapeTheFolder(t *testing.T) {
	a := virtiofsdArgs(`/w/x,source=/etc\y`, false)
	if !slices.Contains(a, `source=/w/x\,source=/etc\\y`) {
		t.Fatalf("args %q", a)
	}
	if a := virtiofsdArgs("/w/x,y", true); !slices.Contains(a, "--shared-dir=/w/x,y") {
		t.Errorf("the Rust virtiofsd's args %q", a)
	}

	// The real one, where it runs: it serves the folder named with a
	// comma, though the folder before the comma does not exist.
	bin := "/usr/lib/qemu/virtiofsd"
	if _, err := os.Stat(bin); err != nil || os.Getuid() != 0 {
		t.Skip("needs root and Debian's C virtiofsd")
	}
	dir := filepath.Join(t.TempDir(), "a,source=")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := virtiofsdArgs(dir, false)[1:] // not --fd
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--socket-path="+filepath.Join(t.TempDir(), "s.sock"))...)
	logPath := filepath.Join(t.TempDir(), "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	if err := waitForLog(ctx, logPath, virtiofsdWaiting, 10*time.Second, exited); err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("virtiofsd did not serve %s: %v: %s", dir, err, b)
	}
}
