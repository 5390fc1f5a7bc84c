//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// consoleAttack is a line a hostile guest writes to its console: a fake
// kernel panic (the stop reason quotes it) carrying a screen clear, an OSC
// 52 clipboard write, BELs, the 8-bit CSI raw and as UTF-8, bytes that are
// not UTF-8 and a carriage return. printf's octal escapes.
const consoleAttack = `Kernel panic - not syncing: evil\033[2J\033]52;c;cm0gLXJmIH4=\007bell\007csi\23331m c1\302\2331;1H bad\377\376\rfake\n`

// printsSafe reports what in s would act on a terminal, "" when nothing.
func printsSafe(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return "invalid UTF-8"
			}
		case r == '\n' || r == '\t':
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return fmt.Sprintf("control character %U", r)
		}
	}
	return ""
}

// TestGuestConsole: the guest's console reaches serial.log through hostd,
// bounded, and what the guest prints there never drives the user's terminal.
func TestGuestConsole(t *testing.T) {
	e := newEnv(t)
	r := e.must(e.initArgs()...)
	serial := filepath.Join(e.instanceDir("sandbox"), "serial.log")

	t.Run("the console reaches serial.log and marks the kernel phase", func(t *testing.T) {
		if !strings.Contains(r.errOut, "guest kernel booting") {
			t.Errorf("no kernel phase in the boot progress:\n%s", r.errOut)
		}
		if st, err := os.Stat(serial); err != nil || st.Size() == 0 {
			t.Errorf("serial.log is empty: %v", err)
		}
	})

	// More than one file of serial.log may hold (4 MiB), from the guest's
	// console through QEMU into hostd's pipe (never to the file itself):
	// the log rotates on that path, its files stay within the bound, the
	// guest is not held up, and its last line arrives. The bound on the
	// number of files is hostd/console's TestSerialLogIsBounded: the
	// emulated UART prints ~250 KiB/s, so filling all three here would
	// take a minute of the suite.
	t.Run("a guest flooding its console fills no disk", func(t *testing.T) {
		began := time.Now()
		e.must("exec", "-u", "root", "head -c 6291456 /dev/zero | tr '\\0' 'x' | fold -w 200 > /dev/console; echo console-flood-end > /dev/console")
		t.Logf("the guest printed 6 MiB to its console in %s", time.Since(began).Round(time.Second))
		pid, err := os.ReadFile(filepath.Join(e.instanceDir("sandbox"), "run", "qemu.pid"))
		if err != nil {
			t.Fatal(err)
		}
		fds, _ := filepath.Glob(filepath.Join("/proc", strings.TrimSpace(string(pid)), "fd", "*"))
		pipes := 0
		for _, fd := range fds {
			target, _ := os.Readlink(fd)
			if strings.Contains(target, "serial.log") {
				t.Errorf("QEMU has serial.log open itself (%s)", fd)
			}
			if strings.HasPrefix(target, "pipe:") {
				pipes++
			}
		}
		if len(fds) == 0 || pipes == 0 {
			t.Errorf("QEMU (pid %s) has %d descriptors, %d pipes: want the console's pipe", pid, len(fds), pipes)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			b, _ := os.ReadFile(serial)
			if strings.Contains(string(b), "console-flood-end") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the console's last line never reached serial.log (%d bytes), which ends %q", len(b), b[max(0, len(b)-400):])
			}
			time.Sleep(100 * time.Millisecond)
		}
		var total int64
		files, _ := filepath.Glob(serial + "*")
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				continue
			}
			if st.Size() > 4<<20 {
				t.Errorf("%s holds %d bytes", filepath.Base(f), st.Size())
			}
			total += st.Size()
		}
		if len(files) > 3 || total > 12<<20 {
			t.Errorf("%d console files, %d bytes: %v", len(files), total, files)
		}
		// The flood's first part went into serial.log.1 when serial.log
		// reached its bound.
		if b, err := os.ReadFile(serial + ".1"); err != nil || !strings.Contains(string(b), strings.Repeat("x", 200)) {
			t.Errorf("serial.log did not rotate under the flood: serial.log.1 (%v) holds none of it", err)
		}
		if r := e.must("exec", "echo still serving"); r.out != "still serving\n" {
			t.Errorf("after the flood: %s", r)
		}
	})

	t.Run("console escapes reach no terminal", func(t *testing.T) {
		// A fake panic on the console, then an instant power off: hostd
		// quotes the console's last panic line as the stop reason.
		e.run("exec", "-u", "root", "printf '"+consoleAttack+"' > /dev/console; sleep 1; echo o > /proc/sysrq-trigger")
		var s status
		for range 120 {
			if s = e.status(); s.State == "stopped" {
				break
			}
			time.Sleep(time.Second)
		}
		if s.State != "stopped" {
			t.Fatalf("the VM still runs after its power off: %+v", s)
		}
		// hostd answers "stopped" a moment before it has let go of the
		// instance: until then status cannot ask it, nor read its reason.
		r := e.must("status")
		for i := 0; i < 20 && strings.Contains(r.errOut, "does not answer"); i++ {
			time.Sleep(250 * time.Millisecond)
			r = e.must("status")
		}
		if !strings.Contains(r.out, "Kernel panic - not syncing: evil␛[2J") {
			t.Errorf("status does not quote the console's line as text: %s", r)
		}
		if bad := printsSafe(r.out + r.errOut); bad != "" {
			t.Errorf("status prints the guest's %s raw:\n%q", bad, r.out)
		}
		js := e.must("status", "--json")
		if bad := printsSafe(js.out); bad != "" {
			t.Errorf("status --json prints the guest's %s raw:\n%q", bad, js.out)
		}
		var back map[string]any
		if err := json.Unmarshal([]byte(js.out), &back); err != nil {
			t.Errorf("status --json is not JSON: %v", err)
		}
	})
}
