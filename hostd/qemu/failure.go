package qemu

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"time"
)

// qemuExitWait bounds how long a failed start waits for QEMU to exit by
// itself before it is ended: QEMU says why it gives up, then exits.
const qemuExitWait = 10 * time.Second

// maxSaid bounds the line of QEMU's quoted in an error.
const maxSaid = 400

// Failure is QEMU giving up before the VM ran, in its own words, with
// what to install when the cause is one known here. Err is what hostd
// saw (the monitor's socket closing, say), for its log.
type Failure struct {
	Said string // QEMU's last error line
	Hint string // what to do about it, or ""
	Err  error
}

func (f *Failure) Error() string {
	if f.Hint == "" {
		return f.Said
	}
	return f.Said + "; " + f.Hint
}

func (f *Failure) Unwrap() error { return f.Err }

// startFailed explains a start that failed after QEMU was launched. QEMU's
// output reaches qemu.log through a pipe that is drained until QEMU has
// exited, so the log is read only once it has (ending it after
// qemuExitWait): read earlier, it may not hold QEMU's complaint yet.
func (v *VM) startFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err // a stop cut the start short; QEMU did nothing wrong
	}
	select {
	case <-v.qemu.exited:
	case <-time.After(qemuExitWait):
		v.qemu.kill()
	}
	v.log.Warn("qemu did not start", "err", err, "exit", v.qemu.err)
	said := qemuSaid(v.run.file("qemu.log"))
	if said == "" {
		return err
	}
	return &Failure{Said: said, Hint: hint(said), Err: err}
}

// qemuSaid is the last line of QEMU's log that is not a warning (QEMU
// prints its fatal error last), cut to maxSaid bytes; "" for an empty log.
func qemuSaid(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	last := ""
	for _, l := range bytes.Split(b, []byte("\n")) {
		s := strings.TrimSpace(string(l))
		switch {
		case s == "":
		case strings.Contains(s, ": warning: "):
			if last == "" {
				last = s
			}
		default:
			last = s
		}
	}
	if len(last) > maxSaid {
		last = last[:maxSaid] + "…"
	}
	return last
}

// hints are QEMU failures whose fix is known: a file of a package that a
// minimal install leaves out.
var hints = []struct {
	re   *regexp.Regexp
	hint string
}{
	{regexp.MustCompile(`failed to find romfile "([^"]+)"`),
		"the network card's option ROM $1 is missing: install it (Debian: apt install ipxe-qemu)"},
	{regexp.MustCompile(`could not load PC BIOS '([^']+)'`),
		"the PC BIOS $1 is missing: install it (Debian: apt install seabios)"},
	{regexp.MustCompile(`cannot set up guest memory`),
		"this machine cannot give the guest its memory now: close other programs, or recreate the instance with a smaller --memory"},
}

// hint is what to do about a QEMU error line, or "".
func hint(said string) string {
	for _, h := range hints {
		if m := h.re.FindStringSubmatchIndex(said); m != nil {
			return string(h.re.ExpandString(nil, h.hint, said, m))
		}
	}
	return ""
}

// installHint is the command that installs QEMU for a guest architecture,
// with the network card's option ROM that a minimal install leaves out.
func installHint(arch string) string {
	if arch == "arm64" {
		return "Debian: apt install qemu-system-arm ipxe-qemu"
	}
	return "Debian: apt install qemu-system-x86 ipxe-qemu"
}
