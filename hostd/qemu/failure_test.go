package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/fsjail"
	"github.com/coworkhq/cowork/hostd/machine"
)

// fakeQEMUEnv makes the test binary a stand-in for qemu-system-*: it
// prints the line the variable holds and exits 1, as QEMU does when a
// device cannot be set up. With fakeQEMULateEnv set it first serves its
// monitor socket and closes the connections it gets, and only then
// prints and exits, as a QEMU that fails after opening QMP does: read
// before it has exited, its log is still empty.
const (
	fakeQEMUEnv     = "COWORK_TEST_FAKE_QEMU"
	fakeQEMULateEnv = "COWORK_TEST_FAKE_QEMU_LATE"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == fsjail.Arg { // virtiofsd, jailed (save_guest_test.go)
		fmt.Fprintln(os.Stderr, "fsjail:", fsjail.Main(os.Args[2:]))
		os.Exit(1)
	}
	if said := os.Getenv(fakeQEMUEnv); said != "" {
		os.Exit(fakeQEMU(said, os.Getenv(fakeQEMULateEnv) != ""))
	}
	os.Exit(m.Run())
}

func fakeQEMU(said string, late bool) int {
	args := os.Args[1:]
	for i, a := range args {
		if a == "-accel" && i+1 < len(args) && args[i+1] == "kvm" {
			return 1 // the KVM probe: no KVM here
		}
	}
	if late {
		for i, a := range args {
			if a != "-qmp" || i+1 >= len(args) {
				continue
			}
			path, _, _ := strings.Cut(strings.TrimPrefix(args[i+1], "unix:"), ",server")
			ln, err := net.Listen("unix", strings.ReplaceAll(path, ",,", ","))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			// hostd's check that the socket serves, then its QMP client.
			for range 2 {
				if c, err := ln.Accept(); err == nil {
					c.Close()
				}
			}
			ln.Close()
			time.Sleep(300 * time.Millisecond) // still exiting when hostd gives up on QMP
		}
	}
	fmt.Fprintln(os.Stderr, "qemu-system-aarch64: warning: an unrelated warning")
	fmt.Fprintln(os.Stderr, said)
	return 1
}

// fakeQEMUConfig is a kernel-boot VM whose QEMU is the fake above.
func fakeQEMUConfig(t *testing.T) machine.Config {
	t.Helper()
	bin := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %q \"$@\"\n", exe)
	for _, name := range []string{"qemu-system-aarch64", "qemu-system-x86_64"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	dir, err := os.MkdirTemp("", "qf") // short: a unix socket lives under it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	for _, f := range []string{"disk.raw", "vmlinuz"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o600)
	}
	return machine.Config{
		Arch: "arm64", CPUs: 1, Memory: 256 << 20,
		Disk: filepath.Join(dir, "disk.raw"), Kernel: filepath.Join(dir, "vmlinuz"),
		Network: w, Console: w, RunDir: filepath.Join(dir, "run"),
		MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1},
	}
}

// QEMU that gives up says why: its own line (not the monitor's closed
// socket, nor a warning before it), with the package that holds the
// missing file, read once QEMU has exited and its log is complete.
func TestStartFailureIsQEMUsOwnWords(t *testing.T) {
	const romErr = `qemu-system-aarch64: -device virtio-net-pci,netdev=net,mac=52:54:00:00:00:01: failed to find romfile "efi-virtio.rom"`
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("after QMP %v", late), func(t *testing.T) {
			cfg := fakeQEMUConfig(t)
			t.Setenv(fakeQEMUEnv, romErr)
			if late {
				t.Setenv(fakeQEMULateEnv, "1")
			}
			vm, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = vm.Start(ctx)
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("Start: %v, want QEMU's own words", err)
			}
			want := romErr + "; the network card's option ROM efi-virtio.rom is missing: install it (Debian: apt install ipxe-qemu)"
			if err.Error() != want {
				t.Errorf("Start: %q\nwant %q", err, want)
			}
		})
	}
}

func TestQEMUHints(t *testing.T) {
	for said, want := range map[string]string{
		`qemu-system-x86_64: -device virtio-net-pci: failed to find romfile "efi-virtio.rom"`:  "apt install ipxe-qemu",
		`qemu: could not load PC BIOS 'bios-256k.bin'`:                                         "the PC BIOS bios-256k.bin is missing: install it (Debian: apt install seabios)",
		`qemu-system-aarch64: cannot set up guest memory 'mem': Cannot allocate memory`:        "smaller --memory",
		`qemu-system-aarch64: -drive if=none: Could not open '/x/disk.raw': Permission denied`: "",
	} {
		got := hint(said)
		if want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("hint(%q) = %q, want %q", said, got, want)
		}
	}
}

// The line quoted is QEMU's last error, not a warning after it, and
// bounded.
func TestQEMUSaid(t *testing.T) {
	p := filepath.Join(t.TempDir(), "qemu.log")
	os.WriteFile(p, []byte("qemu: first\nqemu: the error\nqemu: warning: later noise\n\n"), 0o600)
	if got := qemuSaid(p); got != "qemu: the error" {
		t.Errorf("got %q", got)
	}
	os.WriteFile(p, []byte("qemu: warning: only this\n"), 0o600)
	if got := qemuSaid(p); got != "qemu: warning: only this" {
		t.Errorf("got %q", got)
	}
	os.WriteFile(p, []byte(strings.Repeat("x", 5000)), 0o600)
	if got := qemuSaid(p); len(got) > maxSaid+len("…") {
		t.Errorf("%d bytes quoted", len(got))
	}
}
