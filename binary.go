package cowork

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coworkhq/cowork/internal/hostdwire"
)

// HostdBinary finds the daemon binary: $COWORK_HOSTD when set, else
// cowork-hostd next to the running program (through symlinks, so a
// cowork linked into PATH finds the one beside the real file), else on
// PATH. The two come from one build and are installed side by side. The
// path returned is absolute: the daemon is launched from "/".
func HostdBinary() (string, error) { return localHostd.find() }

// findHostd is HostdBinary for a given $COWORK_HOSTD (env) and running
// program (exe, "" when unknown).
func findHostd(env, exe string) (string, error) { return localHostd.findFrom(env, exe) }

// daemon is a daemon binary cowork launches: how it is named, the
// environment variable that points at it, and what to do when it is
// nowhere.
type daemon struct {
	binary, env string
	missing     string // the hint at the end of "not installed"
}

// localHostd runs the instances whose guest runs on this machine.
var localHostd = daemon{
	binary:  hostdwire.Binary,
	env:     hostdwire.Env,
	missing: "install both binaries of one build side by side (`make install`, or copy bin/cowork and bin/cowork-hostd)",
}

// find looks for the binary as HostdBinary says.
func (d daemon) find() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		exe = ""
	}
	return d.findFrom(os.Getenv(d.env), exe)
}

// findFrom is find for a given value of the variable (env) and running
// program (exe, "" when unknown).
func (d daemon) findFrom(env, exe string) (string, error) {
	if env != "" {
		abs, err := filepath.Abs(env)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return "", fmt.Errorf("$%s: %w; point it at a %s, or unset it", d.env, err, d.binary)
		}
		return abs, nil
	}
	if exe != "" {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		beside := filepath.Join(filepath.Dir(exe), d.binary)
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	if p, err := exec.LookPath(d.binary); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("%s is not installed next to %s nor on PATH; %s, or set $%s",
		d.binary, exe, d.missing, d.env)
}

// Inspect asks the daemon binary what a disk image and a kernel are
// (either may be ""): the CLI does not link the code that reads disks.
func Inspect(ctx context.Context, image, kernel string) (hostdwire.Inspection, error) {
	var out hostdwire.Inspection
	args := []string{"inspect"}
	if image != "" {
		args = append(args, "--image", image)
	}
	if kernel != "" {
		args = append(args, "--kernel", kernel)
	}
	_, err := askBinary(ctx, &out, args...)
	return out, err
}

// HostdVersion is the daemon binary's path, its build and the agents it
// carries.
func HostdVersion(ctx context.Context) (string, hostdwire.Version, error) {
	var out hostdwire.Version
	bin, err := askBinary(ctx, &out, "version")
	return bin, out, err
}

// askTimeout bounds a one-shot command of the daemon binary: it reads a
// few blocks of a file, or prints its version.
const askTimeout = 30 * time.Second

// askBinary runs a one-shot command of the daemon binary and decodes its
// JSON answer into out; it returns the binary it asked.
func askBinary(ctx context.Context, out any, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	return askBinaryNoTimeout(ctx, out, args...)
}

// askBinaryNoTimeout is askBinary for a command that may take long (it
// reads a whole image, or moves a disk): only ctx bounds it.
func askBinaryNoTimeout(ctx context.Context, out any, args ...string) (string, error) {
	return localHostd.ask(ctx, out, args...)
}

// KubeVirtHostdVersion is HostdVersion for cowork-hostd-kubevirt, the
// daemon of instances on a cluster.
func KubeVirtHostdVersion(ctx context.Context) (string, hostdwire.Version, error) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	var out hostdwire.Version
	bin, err := kubevirtHostd.ask(ctx, &out, "version")
	return bin, out, err
}

// ask is askBinaryNoTimeout for the daemon binary d.
func (d daemon) ask(ctx context.Context, out any, args ...string) (string, error) {
	var answer []byte
	bin, err := d.run(ctx, func(line []byte) { answer = append(answer[:0], line...) }, args...)
	if err != nil {
		if errors.As(err, new(*binaryError)) {
			err = fmt.Errorf("%s %s: %w", bin, args[0], err)
		}
		return bin, err
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return bin, fmt.Errorf("%s %s answered %q: %w", bin, args[0], answer, err)
	}
	return bin, nil
}

// binaryError is what a command of the daemon binary said on stderr when
// it failed.
type binaryError struct{ msg string }

func (e *binaryError) Error() string { return e.msg }

// maxLine bounds a line the daemon binary prints, with its newline; its
// lines are a few hundred bytes of JSON, but for the records of
// cowork-hostd-kubevirt log, which may be as long as egresslog.MaxRecord
// (TestProxyOfAClusterTakesTheLongestRecordSent).
const maxLine = 1 << 20

// runBinary runs a one-shot command of the daemon binary, handing each
// line of its stdout to each; it returns the binary it ran. A command
// that failed is a *binaryError with its message; one the binary does not
// know is named as another build's.
func runBinary(ctx context.Context, each func(line []byte), args ...string) (string, error) {
	return localHostd.run(ctx, each, args...)
}

// run is runBinary for the daemon binary d.
func (d daemon) run(ctx context.Context, each func(line []byte), args ...string) (string, error) {
	bin, err := d.find()
	if err != nil {
		return "", err
	}
	// A variable naming cowork itself would ask itself, which asks
	// itself again, without end (or runs its own command of that name).
	if self, err := os.Executable(); err == nil && sameFile(self, bin) {
		return bin, fmt.Errorf("%s is this cowork, not its daemon; point $%s at %s, or unset it", bin, d.env, d.binary)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return bin, err
	}
	if err := cmd.Start(); err != nil {
		return bin, err
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		each(sc.Bytes())
	}
	if sc.Err() != nil {
		io.Copy(io.Discard, stdout) // let it finish rather than block on a full pipe
	}
	err = cmd.Wait()
	if err == nil {
		err = sc.Err()
	}
	if err != nil {
		msg := strings.TrimPrefix(strings.TrimSpace(stderr.String()), d.binary+": ")
		var ee *exec.ExitError
		switch {
		case ctx.Err() != nil:
			return bin, ctx.Err()
		case errors.As(err, &ee) && ee.ExitCode() == hostdwire.ExitUsage:
			return bin, anotherBuild(bin, args[0], msg)
		case msg != "":
			return bin, &binaryError{msg}
		}
		return bin, fmt.Errorf("%s %s: %w", bin, args[0], err)
	}
	return bin, nil
}

// anotherBuild is the error of a daemon binary that refused a command
// line this cowork gave it (exit 2).
func anotherBuild(bin, command, msg string) error {
	return fmt.Errorf("%s does not understand `%s` (%s): it is from another build than this cowork; install the pair from one build", bin, command, msg)
}

// sameFile says whether a and b are one file, symlinks followed.
func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}
