package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// grub sources the drop-in after the cloud image's own settings.
func TestGrubConsoleDropInKeepsTheLastConsole(t *testing.T) {
	dropIn := filepath.Join(t.TempDir(), "90-cowork-console.cfg")
	if err := os.WriteFile(dropIn, []byte(grubConsoleDropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	for before, want := range map[string]string{
		"console=tty1 console=ttyS0": "console=hvc0 console=tty1 console=ttyS0",
		"quiet console=ttyAMA0":      "console=hvc0 quiet console=ttyAMA0",
		"console=hvc0 console=tty1":  "console=hvc0 console=tty1", // sourced twice
		"quiet splash":               "quiet splash",              // the kernel's own choice stands
		"":                           "",
		"console=tty1 console=ttyS0 console=hvc0": "console=tty1 console=ttyS0 console=hvc0",
	} {
		out, err := exec.Command("sh", "-euc", `GRUB_CMDLINE_LINUX_DEFAULT="$1"; . "$2"; printf %s "$GRUB_CMDLINE_LINUX_DEFAULT"`, "sh", before, dropIn).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v: %s", before, err, out)
		}
		if string(out) != want {
			t.Errorf("%q became %q, want %q", before, out, want)
		}
	}
}

// runConsoleScript runs the bootcmd script as cloud-init does, after a
// `set -e`, with update-grub replaced by a shell script (or absent).
func runConsoleScript(t *testing.T, dir, updateGrub string) (string, error) {
	t.Helper()
	bin := t.TempDir()
	if updateGrub != "" {
		if err := os.WriteFile(filepath.Join(bin, "update-grub"), []byte("#!/bin/sh\n"+updateGrub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "-c", "set -e\n"+grubConsoleScript(dir)+"echo after\n")
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestGrubConsoleScript(t *testing.T) {
	if _, err := exec.LookPath("/usr/bin/update-grub"); err == nil {
		t.Skip("this machine has a real update-grub in /usr/bin")
	}
	grubD := func() string { return filepath.Join(t.TempDir(), "grub.d") }
	calls := filepath.Join(t.TempDir(), "calls")

	t.Run("installs once", func(t *testing.T) {
		dir := grubD()
		for range 2 {
			out, err := runConsoleScript(t, dir, "echo run >> "+calls+"\n")
			if err != nil || !strings.HasSuffix(out, "after\n") {
				t.Fatalf("%v: %s", err, out)
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, "90-cowork-console.cfg"))
		if err != nil || string(b) != grubConsoleDropIn {
			t.Errorf("drop-in %q, %v", b, err)
		}
		if b, _ := os.ReadFile(calls); string(b) != "run\n" {
			t.Errorf("update-grub ran %q, want once", b)
		}
	})
	t.Run("no grub", func(t *testing.T) {
		dir := grubD()
		if out, err := runConsoleScript(t, dir, ""); err != nil || out != "after\n" {
			t.Fatalf("%v: %s", err, out)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("a guest without grub got %s: %v", dir, err)
		}
	})
	t.Run("update-grub fails", func(t *testing.T) {
		dir := grubD()
		out, err := runConsoleScript(t, dir, "exit 1\n")
		if err != nil || !strings.Contains(out, "could not add console=hvc0") || !strings.HasSuffix(out, "after\n") {
			t.Fatalf("the boot must go on with a warning: %v: %s", err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "90-cowork-console.cfg")); !os.IsNotExist(err) {
			t.Errorf("the drop-in stays after a failed update-grub, so no later boot retries: %v", err)
		}
	})
}
