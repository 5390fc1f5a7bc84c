//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A start gives up on a guest that is not ready in time by stopping the VM
// it booted itself, saying why and where the console is, and never stops
// one that another start is booting. The guest here boots its kernel and
// never starts its agent (its init is a program that waits for ever), so
// no start can succeed, whatever the machine's speed.
func TestStartGivesUpOnlyOnItsOwnVM(t *testing.T) {
	e := newEnv(t)
	// The test guest's initramfs runs cowork.init= instead of init; this
	// script of its root waits for a power button it cannot see.
	e.must(e.initArgs("--no-start", "--cmdline", testGuest.cmdline+" cowork.init=/etc/cowork/power-button")...)
	serial := filepath.Join(e.instanceDir("sandbox"), "serial.log")

	t.Run("a guest that never reaches its agent", func(t *testing.T) {
		r := e.run("start", "--timeout", "15s")
		// The progress lines, then the error: its first line says why.
		_, msg, _ := strings.Cut(r.errOut, "\ncowork: ")
		first, _, _ := strings.Cut(msg, "\n")
		if r.code != 1 || first != "sandbox did not become ready within 15s: the guest booted but never reached its agent; stopped the VM this start booted" ||
			!strings.Contains(r.errOut, "the guest's console log is "+serial+"\n") {
			t.Fatalf("start: %s", r)
		}
		if s := e.status(); s.State != "stopped" || s.Note != "" {
			t.Fatalf("after a start that gave up: %+v", s)
		}
		if left := processesOf(e.instanceDir("sandbox")); len(left) > 0 {
			t.Fatalf("processes left after a start that gave up: %v", left)
		}
	})

	t.Run("a second start leaves the first one's boot alone", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		first := e.cmd(ctx, "start", "--timeout", "4m")
		stderr, _ := first.StderrPipe()
		if err := first.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var seen string
		for !strings.Contains(seen, "VM started") {
			n, err := stderr.Read(buf)
			seen += string(buf[:n])
			if err != nil {
				t.Fatalf("the first start ended before the VM started: %q", seen)
			}
		}
		booting := e.status()
		r := e.run("start", "--timeout", "5s")
		if r.code != 1 || !strings.Contains(r.errOut, "sandbox was already starting (another `cowork start`?) and is left running") {
			t.Errorf("the second start: %s", r)
		}
		if s := e.status(); s.State != "running" || s.HostdPid == 0 || s.HostdPid != booting.HostdPid {
			t.Fatalf("the second start touched the first one's VM: %+v, was %+v", s, booting)
		}
		// The first start is still the boot's owner: interrupted, it stops it.
		first.Process.Signal(syscall.SIGINT)
		go func() { // drain, so that it never blocks on a full pipe
			for {
				if _, err := stderr.Read(buf); err != nil {
					return
				}
			}
		}()
		if err := first.Wait(); err == nil || err.(*exec.ExitError).ExitCode() != 130 {
			t.Fatalf("the interrupted first start: %v", err)
		}
		if s := e.status(); s.State != "stopped" {
			t.Fatalf("after the first start was interrupted: %+v", s)
		}
	})
}
