package qemu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coworkhq/cowork/internal/rotlog"
	"github.com/coworkhq/cowork/internal/sysproc"
)

// virtiofsdPaths are where virtiofsd lives: the Rust one on PATH or in
// /usr/libexec, then the C one in Debian 12's qemu-system-common.
var virtiofsdPaths = []string{"virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"}

func findVirtiofsd() (path string, rust bool, err error) {
	for _, p := range virtiofsdPaths {
		full, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		help, _ := exec.Command(full, "--help").CombinedOutput()
		return full, strings.Contains(string(help), "--shared-dir"), nil
	}
	return "", false, fmt.Errorf("virtiofsd not found (looked for %s); install it (Debian: apt install qemu-system-common, or virtiofsd)", strings.Join(virtiofsdPaths, ", "))
}

// process is a helper process hostd started, and its exit.
type process struct {
	cmd    *exec.Cmd
	exited chan error
}

// start runs cmd and reaps it when it exits; log, its output, is closed
// then, once all of it is written.
func start(cmd *exec.Cmd, log io.Closer) (*process, error) {
	// A grandchild holding the output pipe must not hold up the reaping.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		log.Close()
		p.exited <- err
		close(p.exited)
	}()
	return p, nil
}

// Bounds of a helper's log (qemu.log, virtiofsd.log): what QEMU and
// virtiofsd print can be provoked by the guest.
const (
	helperLogMax  = 1 << 20
	helperLogKeep = 1
)

// helperLog is a fresh capped log for a helper's output.
func helperLog(path string) (*rotlog.File, error) {
	return rotlog.Open(path, rotlog.Options{MaxSize: helperLogMax, Keep: helperLogKeep, Fresh: true})
}

// kill ends the process and waits until it is reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// startVirtiofsd shares dir on a vhost-user socket at sock and returns
// once it listens. It dies with hostd (SIGKILL on parent death).
func startVirtiofsd(ctx context.Context, dir, sock string, log *slog.Logger) (*process, error) {
	bin, rust, err := findVirtiofsd()
	if err != nil {
		return nil, err
	}
	var args []string
	if rust {
		args = []string{"--socket-path=" + sock, "--shared-dir=" + dir, "--cache=auto"}
		if os.Geteuid() != 0 {
			args = append(args, "--sandbox=none")
		}
	} else {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("%s (the C virtiofsd) needs root to share the workspace; install the Rust virtiofsd, or run cowork as root", bin)
		}
		args = []string{"--socket-path=" + sock, "-o", "source=" + dir, "-o", "cache=auto", "-o", "xattr"}
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysproc.Attr(true)
	logf, err := helperLog(filepath.Join(filepath.Dir(sock), "virtiofsd.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	log.Info("starting virtiofsd", "binary", bin, "args", args)
	p, err := start(cmd, logf)
	if err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	// Not a test connection: virtiofsd serves one client and exits when it leaves.
	if err := waitForPath(ctx, sock, p.exited); err != nil {
		p.kill()
		return nil, fmt.Errorf("virtiofsd %w: %s", err, tail(logf.Name(), 3))
	}
	return p, nil
}
